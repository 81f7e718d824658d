"""Class-conditional Gaussians with one tied covariance: Mahalanobis (MDS) and relative
Mahalanobis (RMDS, Ren et al. 2021), fitted on ID-train features (eval transform).

`mahalanobis` reads the head's embedding (halo-bench's original detector); `mds` and
`rmds` read the backbone's penultimate features, as OpenOOD v1.5's postprocessors do.
Covariances are maximum-likelihood (divided by N) with a pseudo-inverse, as OpenOOD's
sklearn `EmpiricalCovariance` (pinvh); pytorch-ood sums the outer products without
dividing by N and adds 1e-6 I before inverting, so its distances are ours / N
(exactly where the covariance is well conditioned).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import HaloBenchError
from .base import Detector, DetectorContext, penultimate, register_detector

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    from torch import Tensor

    from ..features.passes import SplitOutputs

CHUNK = 8192


def class_means(z: Tensor, y: Tensor, k: int, who: str) -> Tensor:
    import torch

    missing = [c for c in range(k) if not bool((y == c).any())]
    if missing:
        raise HaloBenchError(f"{who}: the ID train split has no samples of class(es) {missing}.")
    return torch.stack([z[y == c].mean(dim=0) for c in range(k)])


def tied_precision(centred: Tensor) -> Tensor:
    """(Pseudo-)inverse of the ML covariance of already-centred rows; pinv since features
    of dead units or a collapsed class make the covariance singular."""
    import torch

    cov = centred.T @ centred / len(centred)
    return torch.linalg.pinv(cov, hermitian=True)


def squared_distances(z: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """(z - mu_k)^T P (z - mu_k) for every row and mean (N x K), float64, in chunks of rows
    (never an N x K x D tensor): z P z - 2 z P mu + mu P mu."""
    import torch

    pm = means @ precision  # K x D
    mpm = (pm * means).sum(dim=1)
    out = []
    for chunk in z.split(CHUNK):
        zp = chunk @ precision
        out.append((zp * chunk).sum(dim=1, keepdim=True) - 2.0 * chunk @ pm.T + mpm[None])
    return torch.cat(out) if out else torch.empty(0, len(means), dtype=z.dtype)


class _Gaussian(Detector):
    needs_train = True

    def _features(self, outputs: SplitOutputs) -> Tensor:
        if self.reads == "penultimate":
            return penultimate(outputs, self.name)
        return outputs.features.double()

    def fit(self, ctx: DetectorContext) -> None:
        # mds and rmds (and --tune) share one fit of the same features: memoised per context.
        def class_fit() -> tuple[Tensor, Tensor]:
            assert ctx.train is not None
            z = self._features(ctx.train)
            y = ctx.train.labels
            means = class_means(z, y, ctx.num_classes, self.name)
            return means, tied_precision(z - means[y])

        self.means, self.precision = ctx.shared(f"gaussian:{self.reads}", class_fit)

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        dist = squared_distances(self._features(outputs), self.means, self.precision)
        return (-dist.min(dim=1).values).numpy()


@register_detector
class MDS(_Gaussian):
    # No tune_grid: OpenOOD's mds.yml and rmds.yml sweep nothing (APS_mode False).
    name = "mds"
    summary = "-min_k Mahalanobis distance to ID-train class means, penultimate features (OpenOOD's MDS)"
    reads = "penultimate"


@register_detector
class RMDS(_Gaussian):
    """-min_k (d_k(h) - d_0(h)): class distances relative to one Gaussian fitted to all of ID
    train (OpenOOD's RMDS, which takes max_k of the negation). pytorch-ood's `RMD` is ours
    divided by -N (see the module docstring)."""

    name = "rmds"
    summary = "-min_k (class Mahalanobis - background Mahalanobis), penultimate features (OpenOOD's RMDS)"
    reads = "penultimate"

    def fit(self, ctx: DetectorContext) -> None:
        super().fit(ctx)

        def background_fit() -> tuple[Tensor, Tensor]:
            assert ctx.train is not None
            z = self._features(ctx.train)
            mean = z.mean(dim=0, keepdim=True)
            return mean, tied_precision(z - mean)

        self.background_mean, self.background_precision = ctx.shared(f"gaussian-background:{self.reads}",
                                                                     background_fit)

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        z = self._features(outputs)
        dist = squared_distances(z, self.means, self.precision)
        background = squared_distances(z, self.background_mean, self.background_precision)
        return (-(dist - background).min(dim=1).values).numpy()
