"""Mahalanobis distance to class means under one tied covariance (Lee et al. 2018, no input noise)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import HaloBenchError
from ..features import SplitOutputs
from .base import Detector, DetectorContext, register_detector


@register_detector
class Mahalanobis(Detector):
    name = "mahalanobis"
    summary = "-min_k (z - mu_k)^T P (z - mu_k), class means and tied covariance of ID-train embeddings"
    needs_train = True

    def fit(self, ctx: DetectorContext) -> None:
        assert ctx.train is not None
        z = ctx.train.features.double()
        y = ctx.train.labels
        k = ctx.num_classes
        missing = [c for c in range(k) if not bool((y == c).any())]
        if missing:
            raise HaloBenchError(f"mahalanobis: the ID train split has no samples of class(es) {missing}.")
        self.means = torch.stack([z[y == c].mean(dim=0) for c in range(k)])
        centred = z - self.means[y]
        cov = centred.T @ centred / len(z)
        # pinv, since embeddings of a collapsed class can make the covariance singular.
        self.precision = torch.linalg.pinv(cov, hermitian=True)

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        diff = outputs.features.double()[:, None, :] - self.means[None]  # N x K x D
        dist = torch.einsum("nkd,de,nke->nk", diff, self.precision, diff)
        return (-dist.min(dim=1).values).numpy()
