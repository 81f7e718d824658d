"""Scores only a HALO head defines: its abstain probability and its centroid distance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Detector, DetectorContext, class_logits, register_detector

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it

    from ..features.passes import SplitOutputs


@register_detector
class HALOAbstain(Detector):
    name = "halo_abstain"
    summary = "1 - p(abstain) under the K+1 softmax, as log(1 - p(abstain))"
    halo_only = True

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        # 1 - p(abstain) = sigmoid(logsumexp(l)) rounds to exactly 1.0 for confident
        # samples, and ties would cost AUROC; its log keeps the order (that of energy).
        import torch

        lse = torch.logsumexp(class_logits(outputs.logits, ctx.num_classes), dim=1)
        return torch.nn.functional.logsigmoid(lse).numpy()


@register_detector
class HALODistance(Detector):
    name = "halo_distance"
    summary = "-min_k ||z - c_k||^2 / D to the centred centroids (a diagnostic)"
    reads = "embedding"
    halo_only = True

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        import torch

        centroids = ctx.model.head.centroids.detach().cpu().double()
        centroids = centroids - centroids.mean(dim=0)
        z = outputs.features.double()
        dist = torch.cdist(z, centroids, compute_mode="donot_use_mm_for_euclid_dist").pow(2) / z.shape[1]
        return (-dist.min(dim=1).values).numpy()
