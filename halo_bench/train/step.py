"""One training step, shared by every loss (only the head differs), and the device-side
watch for non-finite losses and gradients.

The step never waits for the device: whether its loss and gradient norm were finite is
noted on the device by `DivergenceWatch`, which the host reads every `CHECK_EVERY` steps
and at each epoch's end, always before a checkpoint is written."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..core import distributed
from ..core.errors import HaloBenchError
from ..models.classifier import Classifier

CHECK_EVERY = 50  # steps between the host's looks at the device-side divergence flag


class TrainingDiverged(HaloBenchError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainForward(nn.Module):
    """One training forward: backbone, embedding and the head's loss inside one module's
    forward, so DistributedDataParallel sees (and synchronises) the whole step.

    `backbone` is the model's own, or its compiled wrapper, or an identity when the
    inputs are cached backbone features.
    """

    def __init__(self, model: Classifier, backbone: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.backbone = backbone

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.model.embed(self.backbone(x))
        return self.model.head.loss(z, y), z


@dataclass
class StepOutcome:
    """What one step leaves on the device; nothing here has been read by the host."""

    loss: torch.Tensor
    correct: torch.Tensor
    finite: torch.Tensor  # loss and gradient norm finite
    grad_norm: torch.Tensor
    scaled: bool = False  # fp16's GradScaler stepped: it skipped a non-finite step itself


class DivergenceWatch:
    """Notes, on the device, the first step of an epoch whose loss or gradient is not
    finite; the host reads it (one sync) every `every` steps and at the epoch's end.

    Under fp16's GradScaler a non-finite step is an overflow the scaler skips (halving
    its scale), not a divergence; only a collapsing scale is (`problem`).

    A bad step has already updated the weights by the time the host knows, but the
    weights only reach disk in the checkpoint after the epoch-end check, so the last
    checkpoint on disk is always a good one.
    """

    def __init__(self, device: torch.device, every: int | None = None) -> None:
        self.every = every or CHECK_EVERY
        self.found = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.zeros(3, device=device)  # step, loss, gradient norm
        self.step = torch.zeros((), device=device)

    def observe(self, outcome: StepOutcome) -> None:
        if not outcome.scaled:
            bad = ~outcome.finite
            values = torch.stack([self.step, outcome.loss.float(), outcome.grad_norm.float()])
            self.first = torch.where(bad & ~self.found, values, self.first)
            self.found |= bad
        self.step += 1

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def problem(self, scaler: torch.amp.GradScaler) -> tuple[int, str] | None:
        """(step, what went wrong) if any rank saw a non-finite step; one host sync."""
        if bool(distributed.any_rank(self.found)):
            step, loss, norm = self.first.tolist()
            return int(step), f"loss = {loss}, gradient norm = {norm}"
        # fp16 skips non-finite steps and halves its scale; a collapsed scale means every step is.
        if scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
            return int(self.step) - 1, (f"fp16 loss scale fell to {scaler.get_scale():g}: the gradients stay "
                                        "non-finite")
        return None


MIN_LOSS_SCALE = 2.0**-8  # from 2**16, 24 consecutive skipped fp16 steps


def train_step(forward: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, grad_clip: float | None, dtype: torch.dtype | None) -> StepOutcome:
    """One optimiser step under autocast through `forward` (a `TrainForward`, DDP-wrapped or not).

    Returns device tensors only and never waits for the device: whether the loss and
    gradient norm were finite is for a `DivergenceWatch` to note. (fp16's GradScaler
    reads its overflow flag on the host and skips overflowing steps itself, so under an
    enabled scaler a non-finite step is not a divergence.)
    """
    model: Classifier = getattr(forward, "module", forward).model
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, z = forward(x, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    finite = torch.isfinite(loss.detach()) & torch.isfinite(norm)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():  # outside autocast: the head reads its own float32 weights
        logits = model.head(z.detach().float())
        correct = (logits[:, : model.num_classes].argmax(dim=1) == y).sum()
    return StepOutcome(loss.detach(), correct, finite, norm.detach(), scaler.is_enabled())
