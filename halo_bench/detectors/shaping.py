"""Activation shaping on penultimate features, then energy: ReAct (Sun et al. 2021) and
ASH (Djurisic et al. 2023; ASH-S, -P or -B). The shaped features go through the model's
own embed + head (`tail.tail_logits`), never the backbone again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import PERCENTILE, Detector, DetectorContext, penultimate, register_detector
from .tail import tail_logits

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    from torch import Tensor

    from ..features.passes import SplitOutputs


def energy(logits: Tensor) -> np.ndarray:
    import torch

    return torch.logsumexp(logits, dim=1).numpy()


@register_detector
class ReAct(Detector):
    """energy(f(min(h, c))), c the `percentile`-th percentile of all ID-train penultimate
    activations (OpenOOD estimates c on its ID-val list; halo-bench on ID train, never test).
    pytorch-ood's `ReAct` with the same c returns the negation."""

    name = "react"
    summary = "energy of the logits of penultimate features clipped at their ID-train percentile"
    defaults = {"percentile": 90.0}
    checks = {"percentile": PERCENTILE}
    tune_grid = {"percentile": (85.0, 90.0, 95.0, 99.0)}  # OpenOOD v1.5's react.yml sweep
    reads = "penultimate"
    needs_train = True

    def fit(self, ctx: DetectorContext) -> None:
        assert ctx.train is not None
        acts = ctx.train.penultimate
        assert acts is not None
        self.threshold = float(np.percentile(acts.numpy().ravel(), self.float_param("percentile")))

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        h = penultimate(outputs, self.name).clamp(max=self.threshold)
        return energy(tail_logits(ctx, h))

    def settings(self) -> dict:
        out = super().settings()
        if hasattr(self, "threshold"):
            out["threshold"] = self.threshold
        return out


def ash(h: Tensor, percentile: float, variant: str = "s") -> Tensor:
    """ASH per sample: keep the top n - round(n * percentile / 100) activations (at least one),
    zero the rest, then
    - "p" (ASH-P): nothing more;
    - "b" (ASH-B): set every kept one to sum before / kept count (binarise, preserving the sum);
    - "s" (ASH-S): scale the kept ones by exp(sum before / sum after). A sample whose kept sum
      is not positive (all-zero features) is left as pruned, where the formula divides by zero.
    """
    import torch

    n = h.shape[1]
    keep = max(1, n - int(np.round(n * percentile / 100.0)))  # 0 kept would make ASH-B divide by zero
    s1 = h.sum(dim=1)
    values, index = h.topk(keep, dim=1)
    if variant == "b":
        values = (s1 / keep)[:, None].expand_as(values)
    pruned = torch.zeros_like(h).scatter_(1, index, values)
    if variant != "s":
        return pruned
    s2 = pruned.sum(dim=1)
    scale = torch.where(s2 > 0, s1 / torch.where(s2 > 0, s2, 1.0), 0.0)
    return pruned * torch.exp(scale)[:, None]


@register_detector
class ASH(Detector):
    """energy(f(ASH(h))) on the pooled penultimate features h, as OpenOOD v1.5 shapes them
    (its ResNet feature vector, seen as C x 1 x 1). `variant` s (default, the paper's
    recommendation), p or b; each equals pytorch-ood's `ASH(variant="ash-<v>")` on
    h[:, :, None, None] with percentile / 100, negated.

    OpenOOD v1.5's tables are ASH-B: its `ASHNet.forward_threshold` calls `ash_b`. Compare
    them with `ash:variant=b`.
    """

    name = "ash"
    summary = ("energy of the logits of ASH-shaped penultimate features, pruned below the percentile; variant s "
               "rescales the rest (default), p only prunes, b binarises (OpenOOD v1.5's tables: b)")
    defaults = {"percentile": 90.0, "variant": "s"}
    checks = {"percentile": PERCENTILE}
    choices = {"variant": ("s", "p", "b")}  # halo-bench's own setting: OpenOOD's ASH has no variant
    tune_grid = {"percentile": (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)}  # OpenOOD v1.5's ash.yml sweep
    reads = "penultimate"

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        h = ash(penultimate(outputs, self.name), self.float_param("percentile"), str(self.params["variant"]))
        return energy(tail_logits(ctx, h))
