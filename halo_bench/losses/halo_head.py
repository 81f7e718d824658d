"""The HALO head and its maths (docs/method.md): distance logits to learned, mean-centred
class centroids plus a parameter-free abstain class at the origin.

The formulas are small pure functions so each can be tested against its float64
definition on its own; `HALOHead` wires them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import reduce_loss, soft_cross_entropy, working_dtype

# Where the radial term starts: ||x - c||^2 / D for unit-variance x and c at init.
R2_INIT = 2.0
# The shifted true-class logit should start this many nats above the rest at init.
INIT_LOGIT_SPREAD = 20.0
# Guards log(r2) when an embedding sits exactly on its centroid.
R2_EPS = 1e-6


@dataclass(frozen=True)
class HALOInit:
    """Closed-form initial values of a HALO head (docs/method.md section 3)."""

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


class HALOHead(nn.Module):
    """Distance logits to learned, mean-centred class centroids plus an abstain class.

    The abstain class has its centroid at the origin, so it costs no parameters:
    its shifted logit is the constant `abstain_bias`. `forward` returns the K logits
    relative to the abstain class and a zero abstain column, so `softmax(forward(x))`
    is exactly the softmax the loss trained. All arithmetic runs in float32, also
    under autocast (float64 for float64 inputs), because the logits are differences of
    O(gamma) quantities.
    """

    abstain = True
    kind = "halo"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        label_smoothing: float = 0.1,
        distill: bool = True,
        learn_gamma: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        init = halo_init(num_classes, in_features, label_smoothing)
        self.in_features = in_features
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.distill = distill
        self.learn_gamma = learn_gamma
        self.reduction = reduction
        self.centroids = nn.Parameter(torch.randn(num_classes, in_features))
        self.gamma_raw = nn.Parameter(torch.tensor(init.gamma_raw), requires_grad=learn_gamma)
        self.register_buffer("abstain_bias", torch.tensor(init.abstain_bias))

    @property
    def gamma(self) -> Tensor:
        """The current temperature, softplus of the learned scalar."""
        return F.softplus(self.gamma_raw)

    def centred_centroids(self) -> Tensor:
        """Centroids with their mean removed; gradients flow through the centring."""
        return self.centroids - self.centroids.mean(dim=0, keepdim=True)

    def _terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-dimension averages: x_sq (N x 1), c_sq (K), dot (N x K), C, gamma.

        At least float32 (bf16/fp16 inputs are upcast), float64 when the input is.
        """
        dtype = working_dtype(x)
        c = self.centred_centroids().to(dtype)
        x = x.to(dtype)
        dim = x.shape[1]
        x_sq = x.pow(2).mean(dim=1, keepdim=True)
        c_sq = c.pow(2).mean(dim=1)
        dot = x @ c.t() / dim
        return x_sq, c_sq, dot, c, self.gamma.to(dtype)

    def shifted_logits(self, x: Tensor) -> Tensor:
        """s_k = gamma (2 dot - c_sq): the distance logits without the per-row -gamma x_sq."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            _, c_sq, dot, _, gamma = self._terms(x)
            return gamma * (2.0 * dot - c_sq)

    def distance_logits(self, x: Tensor) -> Tensor:
        """t_k = -gamma ||x - c_k||^2 / D."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_sq, c_sq, dot, _, gamma = self._terms(x)
            return gamma * (2.0 * dot - c_sq - x_sq)

    def squared_distances(self, x: Tensor) -> Tensor:
        """||x - c_k||^2 / D for every class (N x K), computed directly."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = working_dtype(x)
            c = self.centred_centroids().to(dtype)
            return (x.to(dtype)[:, None, :] - c[None]).pow(2).mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        """N x (K+1): logits relative to the abstain class, then a zero abstain column."""
        s = self.shifted_logits(x)
        rel = s - self.abstain_bias.to(s.dtype)
        return torch.cat([rel, rel.new_zeros(rel.shape[0], 1)], dim=1)

    def loss(self, x: Tensor, y: Tensor, reduction: str | None = None) -> Tensor:
        """The HALO loss of embeddings `x` (N x D) with labels `y`: cross-entropy over the K+1
        shifted logits against the (self-distilled) soft targets, plus the radial term
        (docs/method.md, sections 2-5); reduced by `reduction` (default: the head's)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(working_dtype(x))
            x_sq, c_sq, dot, c, gamma = self._terms(x)
            s = gamma * (2.0 * dot - c_sq)
            bias = self.abstain_bias.to(s.dtype).expand(s.shape[0], 1)
            logits = torch.cat([s, bias], dim=1)
            targets = halo_targets(s - gamma * x_sq, y, self.label_smoothing, self.distill)
            ce = soft_cross_entropy(logits, targets)
            r2 = (x - c[y]).pow(2).mean(dim=1)
            per_sample = ce + radial_nll(r2, x.shape[1])
        return reduce_loss(per_sample, reduction or self.reduction)

    def knobs(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing, "distill": self.distill,
                "learn_gamma": self.learn_gamma}

    def config(self) -> dict[str, Any]:
        """The head's type, sizes and knobs, as a checkpoint records them."""
        return {"type": self.kind, "in_features": self.in_features, "num_classes": self.num_classes,
                **self.knobs()}

    def diagnostics(self) -> dict[str, float]:
        """The learned temperature, the number that shows a HALO run collapsing or not."""
        return {"gamma": float(self.gamma.detach())}
