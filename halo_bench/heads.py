"""Classification heads: `LinearHead` for cross-entropy, `HALOHead` for the HALO loss.

Both map an embedding (N x D) to logits with `forward` and compute their training
loss with `loss(x, y)`, so a model swaps one for the other and nothing else.
`abstain` tells evaluation whether the last logit column is HALO's abstain class.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import halo_init, halo_targets, radial_nll, reduce_loss, soft_cross_entropy


def _working_dtype(x: Tensor) -> torch.dtype:
    """float32 at least (bf16/fp16 inputs are upcast), float64 when the input is."""
    return torch.promote_types(x.dtype, torch.float32)


class LinearHead(nn.Module):
    """A linear layer trained with categorical cross-entropy (CCE)."""

    abstain = False

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)

    def loss(self, x: Tensor, y: Tensor, reduction: str | None = None) -> Tensor:
        per_sample = F.cross_entropy(
            self(x).float(), y, label_smoothing=self.label_smoothing, reduction="none"
        )
        return reduce_loss(per_sample, reduction or self.reduction)

    def config(self) -> dict[str, Any]:
        return {
            "type": "linear",
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }


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
        dtype = _working_dtype(x)
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
            dtype = _working_dtype(x)
            c = self.centred_centroids().to(dtype)
            return (x.to(dtype)[:, None, :] - c[None]).pow(2).mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        """N x (K+1): logits relative to the abstain class, then a zero abstain column."""
        s = self.shifted_logits(x)
        rel = s - self.abstain_bias.to(s.dtype)
        return torch.cat([rel, rel.new_zeros(rel.shape[0], 1)], dim=1)

    def loss(self, x: Tensor, y: Tensor, reduction: str | None = None) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(_working_dtype(x))
            x_sq, c_sq, dot, c, gamma = self._terms(x)
            s = gamma * (2.0 * dot - c_sq)
            bias = self.abstain_bias.to(s.dtype).expand(s.shape[0], 1)
            logits = torch.cat([s, bias], dim=1)
            targets = halo_targets(s - gamma * x_sq, y, self.label_smoothing, self.distill)
            ce = soft_cross_entropy(logits, targets)
            r2 = (x - c[y]).pow(2).mean(dim=1)
            per_sample = ce + radial_nll(r2, x.shape[1])
        return reduce_loss(per_sample, reduction or self.reduction)

    def config(self) -> dict[str, Any]:
        return {
            "type": "halo",
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "distill": self.distill,
            "learn_gamma": self.learn_gamma,
        }


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "halo": HALOHead}


def head_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a head from `config()` output (as stored in a checkpoint)."""
    kwargs = dict(config)
    kind = kwargs.pop("type")
    return HEADS[kind](**kwargs)
