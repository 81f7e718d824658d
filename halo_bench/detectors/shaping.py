"""Activation shaping on penultimate features, then energy: ReAct (Sun et al. 2021) and
ASH-S (Djurisic et al. 2023). The shaped features go through the model's own embed + head
(`tail.tail_logits`), never the backbone again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import PERCENTILE, Detector, DetectorContext, penultimate, register_detector
from .tail import tail_logits

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    from torch import Tensor

    from ..features import SplitOutputs


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
    tune_grid = {"percentile": (85.0, 90.0, 95.0, 99.0)}  # OpenOOD v1.5's sweep
    reads = "penultimate"
    needs_train = True

    def fit(self, ctx: DetectorContext) -> None:
        assert ctx.train is not None
        acts = ctx.train.penultimate
        assert acts is not None
        self.threshold = float(np.percentile(acts.numpy().ravel(), self.params["percentile"]))

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        h = penultimate(outputs, self.name).clamp(max=self.threshold)
        return energy(tail_logits(ctx, h))

    def settings(self) -> dict:
        out = super().settings()
        if hasattr(self, "threshold"):
            out["threshold"] = self.threshold
        return out


def ash_s(h: Tensor, percentile: float) -> Tensor:
    """ASH-S per sample: zero all but the top n - round(n * percentile / 100) activations and
    scale the kept ones by exp(sum before / sum after). A sample whose kept sum is not
    positive (all-zero features) is left as pruned, where the formula would divide by zero."""
    import torch

    n = h.shape[1]
    keep = n - int(np.round(n * percentile / 100.0))
    s1 = h.sum(dim=1)
    values, index = h.topk(keep, dim=1)
    pruned = torch.zeros_like(h).scatter_(1, index, values)
    s2 = pruned.sum(dim=1)
    scale = torch.where(s2 > 0, s1 / torch.where(s2 > 0, s2, 1.0), 0.0)
    return pruned * torch.exp(scale)[:, None]


@register_detector
class ASH(Detector):
    """energy(f(ASH-S(h))) on the pooled penultimate features h, as OpenOOD v1.5 shapes them
    (its ResNet feature vector, seen as C x 1 x 1). Equals pytorch-ood's `ASH(variant="ash-s")`
    on h[:, :, None, None] with percentile / 100, negated. Note: OpenOOD's `ASHNet` calls its
    `ash_b` (binarise) in `forward_threshold`; halo-bench follows the paper's recommended ASH-S."""

    name = "ash"
    summary = "energy of the logits of ASH-S-shaped penultimate features (prune below the percentile, rescale)"
    defaults = {"percentile": 90.0}
    checks = {"percentile": PERCENTILE}
    tune_grid = {"percentile": (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)}  # OpenOOD v1.5's sweep
    reads = "penultimate"

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        h = ash_s(penultimate(outputs, self.name), self.params["percentile"])
        return energy(tail_logits(ctx, h))
