"""The HALO loss maths (../shared/docs/HALO.md sections 3-5) as small pure functions.

`heads.HALOHead` wires these together; they are separate so each formula can be
tested against its float64 definition on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Where the radial term starts: ||x - c||^2 / D for unit-variance x and c at init.
R2_INIT = 2.0
# The shifted true-class logit should start this many nats above the rest at init.
INIT_LOGIT_SPREAD = 20.0
# Guards log(r2) when an embedding sits exactly on its centroid.
R2_EPS = 1e-6


@dataclass(frozen=True)
class HALOInit:
    """Closed-form initial values of a HALO head (HALO.md section 3)."""

    r2_target: float
    gamma0: float
    gamma_raw: float
    margin: float
    t_ideal: float
    abstain_bias: float


def inverse_softplus(y: float) -> float:
    """`g` with softplus(g) == y; softplus is the identity above 20."""
    if y > 20.0:
        return y
    return y + math.log(-math.expm1(-y))


def halo_init(num_classes: int, dim: int, label_smoothing: float = 0.1) -> HALOInit:
    """Closed-form temperature and abstain bias for K classes in D dimensions."""
    if num_classes < 2:
        raise ValueError(f"HALO needs at least 2 classes, got {num_classes}")
    if dim < 3:
        # r2_target = 1 - 2/D must be positive for the radial term to have a minimum.
        raise ValueError(f"HALO needs an embedding of at least 3 dimensions, got {dim}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    k, ls = num_classes, label_smoothing
    r2_target = 1.0 - 2.0 / dim
    gamma0 = INIT_LOGIT_SPREAD / (R2_INIT - r2_target)
    if ls > 0:
        p_max, p_min = 1.0 - ls + ls / k, ls / k
    else:
        p_max, p_min = 0.99, 0.01 / k
    margin = math.log(p_max / p_min)
    t_ideal = gamma0 * (1.0 - r2_target)
    return HALOInit(
        r2_target=r2_target,
        gamma0=gamma0,
        gamma_raw=inverse_softplus(gamma0),
        margin=margin,
        t_ideal=t_ideal,
        abstain_bias=t_ideal - margin,
    )


def radial_nll(r2: Tensor, dim: int) -> Tensor:
    """Chi-square negative log-likelihood per dimension, minimal at r2 = 1 - 2/D."""
    return -((0.5 - 1.0 / dim) * torch.log(r2.clamp_min(R2_EPS)) - r2 / 2.0)


@torch.no_grad()
def halo_targets(
    distance_logits: Tensor, target: Tensor, label_smoothing: float, distill: bool
) -> Tensor:
    """Soft targets over K+1 classes; the abstain class (last) always gets 0.

    With `distill`, negatives share the smoothing mass by how near the model already
    puts them (softmax of t_k / ls with the true class pinned at 0); otherwise it is
    ordinary label smoothing over the K real classes.
    """
    n, k = distance_logits.shape
    onehot = F.one_hot(target, k).to(distance_logits.dtype)
    if label_smoothing == 0.0:
        probs = onehot  # both variants reduce to one-hot as ls -> 0
    elif distill:
        z = (distance_logits.float() / label_smoothing).masked_fill(onehot.bool(), 0.0)
        probs = z.softmax(dim=1)
    else:
        probs = onehot * (1.0 - label_smoothing) + label_smoothing / k
    return torch.cat([probs, probs.new_zeros(n, 1)], dim=1)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Per-sample cross-entropy against soft targets."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1)


def reduce_loss(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
