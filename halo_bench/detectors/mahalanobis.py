"""Mahalanobis distance to class means under one tied covariance (Lee et al. 2018, no input
noise), on the head's embedding; `mds` in `gaussian.py` is the same on penultimate features."""

from __future__ import annotations

from .base import register_detector
from .gaussian import _Gaussian


@register_detector
class Mahalanobis(_Gaussian):
    # halo-bench's own (on the embedding, not OpenOOD's penultimate features): nothing to tune.
    name = "mahalanobis"
    summary = "-min_k (z - mu_k)^T P (z - mu_k), class means and tied covariance of ID-train embeddings"
    reads = "embedding"
