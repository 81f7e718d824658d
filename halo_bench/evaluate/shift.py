"""Evaluation under covariate shift: `eval --shift` (docs/protocol.md, "Covariate shift").

For each corruption and severity of the suite's shift set (data/shift.py): one forward pass,
through the feature cache like every other; every detector on those outputs; and
- the ID metrics of the shifted split, raw and after the temperature fitted on clean ID
  validation (Ovadia et al. 2019);
- full-spectrum OOD metrics (OpenOOD v1.5's FSOOD): the clean and the shifted ID test samples
  together are ID, against each OOD set of the suite, with near and far means;
- the rejection rate: the percent of shifted ID samples scoring below the detector's clean
  95%-TPR threshold (the one `fpr95` uses on the clean ID test set).
Splits run one at a time, so memory holds one shifted split's inputs and outputs at once.
Detectors that need the inputs themselves (ODIN) are left out: `EXCLUDED_WHY`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HaloBenchError
from ..data import LoadOptions, load_split
from ..data.registry import GROUPS, DatasetSpec, Registry, SuiteSpec
from ..data.shift import (
    SEVERITIES,
    available_corruptions,
    choose_shift_set,
    parse_severities,
    select_corruptions,
    shifted_spec,
)
from ..detectors import Detector, DetectorContext
from ..features.passes import SplitOutputs
from . import metrics
from .calibration import fit_temperature, scaled_metrics

# Shifted ID metrics after temperature scaling: every calibration and ranking metric (accuracy
# does not move: scaling keeps the argmax).
SHIFT_TS_METRICS = ("ece", "aece", "nll", "brier", "aurc")
EXCLUDED_WHY = ("scores perturbed inputs, so it would run two gradient passes through the model per shifted "
                "split on top of the one forward pass every other detector shares; its clean numbers are "
                "in `ood`")
CONVENTIONS = {
    "id_metrics": "as `id_metrics`, on the shifted split; ts_*: after the temperature fitted on clean ID val",
    "fsood": "OpenOOD v1.5 full-spectrum: clean + shifted ID test samples are ID (positive) against each OOD "
             "set; auroc, fpr95 (ID positive) and fpr95_openood (OOD positive), percent",
    "rejection": "percent of shifted ID samples scoring below the detector's clean 95%-TPR threshold (the "
                 "threshold keeping 95% of the clean ID test set; clean: its own rate, about 5)",
    "mean": "unweighted mean over the corruptions, per severity",
}


@dataclass
class ShiftPlan:
    """Which shifted sets one evaluation reads: the family, its corruptions and severities, the
    detectors scored on them and those left out (label -> why)."""

    family: DatasetSpec
    corruptions: list[str]
    severities: list[int]
    tokens: list[str]
    available: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)

    def specs(self, id_spec: DatasetSpec) -> list[DatasetSpec]:
        return [shifted_spec(self.family, id_spec, c, s) for c in self.corruptions for s in self.severities]

    @property
    def name(self) -> str:
        """The evaluation-name part (results.evaluation_name): `shift`, or what was selected."""
        everything = self.tokens == ["all"]
        return ("shift" if everything else "shift-" + "+".join(self.tokens)) + (
            "" if self.severities == list(SEVERITIES) else "-sev" + "".join(map(str, self.severities)))


def plan_shift(tokens: list[str], severities: list[int] | None, registry: Registry, suite: SuiteSpec,
               data_config: dict[str, Any], root: Path) -> ShiftPlan:
    """The suite's shift set present under `root` and the corruptions and severities asked for."""
    family = choose_shift_set(registry, suite, root)
    available = available_corruptions(family, registry.dataset(suite.id), data_config, root)
    if not available:
        raise HaloBenchError(f"{family.name!r} under {root} holds no corruption's files; re-extract it.")
    chosen = select_corruptions(tokens, available, repr(family.name), family.source == "corrupted")
    chosen_severities = parse_severities(",".join(map(str, severities)) if severities else None)
    return ShiftPlan(family, chosen, chosen_severities, list(tokens), available)


@dataclass
class CleanScores:
    """What the shifted splits are set against: the clean ID test outputs, every detector's
    scores on the clean ID test set and on each OOD set, and the OOD sets' groups."""

    id_outputs: SplitOutputs
    id_scores: dict[str, np.ndarray]
    ood_scores: dict[str, dict[str, np.ndarray]]  # OOD set -> detector -> scores
    groups: dict[str, str]  # OOD set -> near | far
    num_classes: int
    temperature: float | None


def evaluate_shift(plan: ShiftPlan, id_spec: DatasetSpec, detectors: list[Detector], ctx: DetectorContext,
                   clean: CleanScores, run_pass: Callable[[DatasetSpec, Any], SplitOutputs],
                   options: LoadOptions, limit: Callable[[Any], Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """(the results document's `shift` section, its timing): one pass per shifted split, then
    its detectors and metrics, one split at a time."""
    scored = [d for d in detectors if not d.needs_inputs]
    plan.excluded = {d.label: f"{d.name} {EXCLUDED_WHY}" for d in detectors if d.needs_inputs}
    timing = {"shift_forward_passes": 0.0, "shift_inputs": 0.0, "shift_detectors": 0.0, "shift_metrics": 0.0}
    splits: dict[str, dict[str, Any]] = {}
    for spec in plan.specs(id_spec):
        corruption, severity = spec.params["corruption"], spec.params["severity"]
        dataset = limit(load_split(spec, "test", ctx.data_config, options))
        started = time.perf_counter()
        outputs = run_pass(spec, dataset)
        timing["shift_forward_passes"] += time.perf_counter() - started
        inner = getattr(dataset, "dataset", dataset)  # a --limit Subset's split
        timing["shift_inputs"] += getattr(inner, "build_seconds", 0.0)
        if hasattr(inner, "release"):
            inner.release()
        started = time.perf_counter()
        scores = {d.label: d.score(ctx, outputs, dataset) for d in scored}
        timing["shift_detectors"] += time.perf_counter() - started
        started = time.perf_counter()
        splits.setdefault(corruption, {})[str(severity)] = {
            "dataset": spec.name, "n": len(outputs), **split_metrics(outputs, scores, clean)}
        timing["shift_metrics"] += time.perf_counter() - started
    section = {
        "dataset": plan.family.name, "source": plan.family.source,
        "kind": "generated" if plan.family.source == "corrupted" else "published",
        "seed": plan.family.params.get("seed", 0) if plan.family.source == "corrupted" else None,
        "selection": plan.tokens, "corruptions": plan.corruptions, "severities": plan.severities,
        "available": list(plan.available), "detectors": [d.label for d in scored],
        "excluded_detectors": plan.excluded, "temperature": clean.temperature, "conventions": CONVENTIONS,
        "clean": clean_reference(clean, scored), "splits": splits,
        "mean": mean_over_corruptions(splits, plan.severities),
    }
    return section, timing


def split_metrics(outputs: SplitOutputs, scores: dict[str, np.ndarray], clean: CleanScores) -> dict[str, Any]:
    """One shifted split's ID metrics, rejection rates and FSOOD metrics per detector."""
    out: dict[str, Any] = {"id_metrics": shifted_id_metrics(outputs, clean.num_classes, clean.temperature)}
    out["rejection"] = {label: metrics.rejection_rate(clean.id_scores[label], values)
                        for label, values in scores.items()}
    fsood = {}
    for label, values in scores.items():
        per_set = {name: {"group": group, **metrics.fsood_metrics(clean.id_scores[label], values,
                                                                  clean.ood_scores[name][label])}
                   for name, group in clean.groups.items()}
        fsood[label] = {"sets": per_set, **metrics.group_means(per_set, GROUPS, metrics.FSOOD_METRICS)}
    out["fsood"] = fsood
    return out


def shifted_id_metrics(outputs: SplitOutputs, num_classes: int, temperature: float | None) -> dict[str, float]:
    """Accuracy and calibration of one split, raw and (with a temperature) after scaling."""
    probs = outputs.logits.double().softmax(dim=1).numpy()
    out = metrics.id_metrics(probs, outputs.labels.numpy(), num_classes)
    if temperature is not None:
        out.update(scaled_metrics(temperature, outputs.logits, outputs.labels, num_classes, SHIFT_TS_METRICS))
    return out


def clean_reference(clean: CleanScores, scored: list[Detector]) -> dict[str, Any]:
    """Severity 0: the clean ID test set's metrics (the same set of keys) and rejection rates."""
    return {"id_metrics": shifted_id_metrics(clean.id_outputs, clean.num_classes, clean.temperature),
            "rejection": {d.label: metrics.rejection_rate(clean.id_scores[d.label], clean.id_scores[d.label])
                          for d in scored}}



def mean_over_corruptions(splits: dict[str, dict[str, Any]], severities: list[int]) -> dict[str, Any]:
    """Per severity: the unweighted mean over corruptions of every ID metric, rejection rate and
    near/far FSOOD mean."""
    out: dict[str, Any] = {}
    for severity in map(str, severities):
        rows = [by_severity[severity] for by_severity in splits.values() if severity in by_severity]
        if not rows:
            continue

        def mean(get: Callable[[dict[str, Any]], float], rows: list[dict[str, Any]] = rows) -> float:
            return float(np.mean([get(r) for r in rows]))

        first = rows[0]
        out[severity] = {
            "id_metrics": {k: mean(lambda r, k=k: r["id_metrics"][k]) for k in first["id_metrics"]},
            "rejection": {d: mean(lambda r, d=d: r["rejection"][d]) for d in first["rejection"]},
            "fsood": {d: {g: {m: mean(lambda r, d=d, g=g, m=m: r["fsood"][d][g][m]) for m in metrics.FSOOD_METRICS}
                          for g in GROUPS if g in first["fsood"][d]} for d in first["fsood"]},
        }
    return out


def clean_scores(passes_outputs: dict[str, SplitOutputs], scores: dict[str, dict[str, np.ndarray]], suite_id: str,
                 ood_sets: dict[str, tuple[str, str]], num_classes: int, validation: SplitOutputs | None
                 ) -> CleanScores:
    """`CleanScores` from an evaluation's clean passes and detector scores."""
    temperature = fit_temperature(validation.logits, validation.labels) if validation is not None else None
    return CleanScores(passes_outputs[suite_id], scores[suite_id], {name: scores[name] for name in ood_sets},
                       {name: group for name, (group, _) in ood_sets.items()}, num_classes, temperature)


def summary_lines(shift: dict[str, Any], timing: dict[str, float]) -> list[str]:
    """A few terminal lines: accuracy and ECE by severity, and what the shifted passes cost."""
    clean = shift["clean"]["id_metrics"]
    by = shift["mean"]
    sev = [s for s in map(str, shift["severities"]) if s in by]
    lines = [f"  shift ({shift['dataset']}, {len(shift['corruptions'])} corruptions, severity 0/"
             + "/".join(sev) + "): acc " + " / ".join(f"{v:.1f}" for v in [clean["acc"], *(by[s]["id_metrics"]["acc"]
                                                                                           for s in sev)])
             + "  ECE " + " / ".join(f"{v:.3f}" for v in [clean["ece"], *(by[s]["id_metrics"]["ece"] for s in sev)])]
    if "shift_forward_passes" in timing:
        n = sum(len(v) for v in shift["splits"].values())
        lines.append(f"  shift time: {n} shifted splits, forward passes {timing['shift_forward_passes']:.2f} s "
                     f"(of which making inputs {timing.get('shift_inputs', 0):.2f} s), detectors "
                     f"{timing.get('shift_detectors', 0):.2f} s, metrics {timing.get('shift_metrics', 0):.2f} s; "
                     f"clean forward passes {timing.get('forward_passes', 0):.2f} s")
    return lines
