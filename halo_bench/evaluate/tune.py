"""`--tune`: each detector's hyperparameters chosen by AUROC on ID-validation vs OOD-validation.

Only validation data decide (PROTOCOL.md section 4): the ID dataset's `val` split against
the suite's `ood_val` sets, all through the evaluation transform and the feature cache, so
only ODIN (which perturbs inputs) runs the model per grid point. Fitted detectors fit on
ID train as at their defaults. The chosen detector is reported beside the default one as
`NAME[tuned]` (with settings the grid does not cover, e.g. `ash[variant=b][tuned]`); ties go
to the earlier grid point, in the grid's order. A detector none of whose grid points applies
to the model (e.g. ViM's dims on a narrow backbone) gets no tuned row, with a warning.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rich.markup import escape

from ..core.console import console
from ..core.errors import HaloBenchError
from ..detectors import Detector, DetectorContext, make_detector, settings_label
from ..features.passes import SplitOutputs
from . import metrics


@dataclass
class ValidationData:
    id_outputs: SplitOutputs
    id_dataset: Any
    ood: dict[str, tuple[SplitOutputs, Any]]  # display name -> (outputs, dataset)


def grid_points(det: Detector) -> list[dict[str, float]]:
    keys = list(det.tune_grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(det.tune_grid[k] for k in keys))]


def validation_auroc(det: Detector, ctx: DetectorContext, val: ValidationData) -> float:
    if det.needs_train:
        det.fit(ctx)
    s_id = det.score(replace(ctx, split="ID val"), val.id_outputs, val.id_dataset)
    s_ood = np.concatenate([det.score(replace(ctx, split=f"{name} (val)"), out, ds)
                            for name, (out, ds) in val.ood.items()])
    return metrics.auroc(s_id, s_ood)


def tune_detector(base: Detector, ctx: DetectorContext, val: ValidationData) -> Detector | None:
    """The detector at the grid point of highest validation AUROC, labelled `NAME[tuned]`,
    with the search recorded in `tuning`; None for a detector without a grid, or whose every
    grid point is refused (recorded in `base.tuning`)."""
    if not base.tune_grid:
        return None
    fixed = {k: v for k, v in base.params.items() if k in base.explicit and k not in base.tune_grid}
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, float]] | None = None
    for point in grid_points(base):
        try:
            det = make_detector(base.name, {**fixed, **point}, abstain=ctx.abstain)
            det.explicit = frozenset(point) | frozenset(fixed)  # grid values are explicit: no silent fallback
            score = validation_auroc(det, ctx, val)
        except HaloBenchError as exc:  # e.g. k larger than the train set, dim beyond the features
            trials.append({"params": point, "skipped": str(exc)})
            continue
        trials.append({"params": point, "val_auroc": score})
        if best is None or score > best[0]:
            best = (score, point)
    if best is None:
        reason = trials[0]["skipped"] if trials else "empty grid"
        console.print(f"[yellow]warning:[/] --tune: no grid point of {escape(repr(base.label))} applies to this "
                      f"model, so it has no tuned row ({escape(reason)})")
        base.tuning = {"skipped": reason, "trials": trials}
        return None
    tuned = make_detector(base.name, {**fixed, **best[1]}, abstain=ctx.abstain)
    tuned.explicit = frozenset(best[1]) | frozenset(fixed)
    tuned.label = f"{settings_label(base.name, {k: v for k, v in fixed.items() if v != base.defaults[k]})}[tuned]"
    tuned.tuning = {"chosen": best[1], "val_auroc": best[0], "trials": trials,
                    "id_val": "val split of the ID dataset", "ood_val": list(val.ood)}
    return tuned
