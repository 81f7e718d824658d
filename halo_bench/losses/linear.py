"""Linear heads trained with cross-entropy: plain CCE (optionally label-smoothed) and LogitNorm."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .functional import reduce_loss, working_dtype


class LinearHead(nn.Module):
    """A linear layer trained with categorical cross-entropy (CCE), with optional label smoothing."""

    abstain = False
    kind = "cce"

    def __init__(self, in_features: int, num_classes: int, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)

    def training_logits(self, x: Tensor) -> Tensor:
        """The logits the cross-entropy reads, in float32 at least (also under autocast)."""
        return self(x).to(working_dtype(x))

    def loss(self, x: Tensor, y: Tensor, reduction: str | None = None) -> Tensor:
        per_sample = F.cross_entropy(self.training_logits(x), y, label_smoothing=self.label_smoothing,
                                     reduction="none")
        return reduce_loss(per_sample, reduction or self.reduction)

    def knobs(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "in_features": self.in_features, "num_classes": self.num_classes,
                **self.knobs()}

    def diagnostics(self) -> dict[str, float]:
        """Per-epoch numbers worth logging besides loss and accuracy (none for CCE)."""
        return {}


class LogitNormHead(LinearHead):
    """LogitNorm (Wei et al. 2022): cross-entropy on f / (tau ||f||).

    Training normalises the logit vector, so the loss cannot be lowered by growing
    its norm; `forward` returns the raw logits f, which evaluation and every detector
    read (as in the paper and OpenOOD v1.5).
    """

    kind = "logitnorm"
    NORM_EPS = 1e-7  # as the reference implementation: keeps f = 0 finite

    def __init__(self, in_features: int, num_classes: int, tau: float = 0.04, reduction: str = "mean") -> None:
        super().__init__(in_features, num_classes, label_smoothing=0.0, reduction=reduction)
        self.tau = tau

    def training_logits(self, x: Tensor) -> Tensor:
        f = super().training_logits(x)
        return f / (self.tau * (f.norm(dim=1, keepdim=True) + self.NORM_EPS))

    def knobs(self) -> dict[str, Any]:
        return {"tau": self.tau}
