"""Loss arithmetic shared by the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def working_dtype(x: Tensor) -> torch.dtype:
    """float32 at least (bf16/fp16 inputs are upcast), float64 when the input is."""
    return torch.promote_types(x.dtype, torch.float32)


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
