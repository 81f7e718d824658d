"""What defines a training run, as plain data: no torch, so the CLI validates it instantly."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .errors import HaloBenchError
from .losses import get_loss

if TYPE_CHECKING:
    from .registry import Registry

# Config fields that do not change what is trained, so a run may resume with others.
RUNTIME_FIELDS = {"device", "amp", "channels_last", "compile", "num_workers", "out", "data_root"}


@dataclass
class TrainConfig:
    """Everything that defines a training run. `None` recipe fields take the suite's default.

    `loss_knobs` holds the loss's hyperparameters (see `halo-bench losses`); the
    ones not given take the loss's defaults when the config is resolved.
    """

    model: str
    loss: str = "halo"
    suite: str = "digits"
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    warmup_epochs: int | None = None
    embed_dim: int | None = None
    loss_knobs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    num_workers: int | None = None  # default: 0 for in-memory data, up to 8 for image files
    out: str = "runs"
    data_root: str | None = None  # default: $HALO_BENCH_DATA, else ./data

    def resolved(self, registry: Registry) -> TrainConfig:
        """A copy with every unset recipe field filled from the suite's recipe and every
        loss knob from the loss's defaults."""
        self.check()
        recipe = registry.suite(self.suite).recipe
        values = asdict(self)
        for key, default in recipe.items():
            if values.get(key) is None:
                values[key] = default
        if values["grad_clip"] is not None and values["grad_clip"] <= 0:
            values["grad_clip"] = None  # --grad-clip 0 turns clipping off
        values["loss_knobs"] = _asdict(get_loss(self.loss).make_knobs(self.loss_knobs))
        resolved = TrainConfig(**values)
        resolved.check()
        return resolved

    def check(self) -> None:
        """Reject values no run can use, naming the flag to fix."""
        get_loss(self.loss)
        numbers = {"--lr": self.lr, "--weight-decay": self.weight_decay, "--momentum": self.momentum,
                   "--grad-clip": self.grad_clip}
        for flag, value in numbers.items():
            if value is not None and not math.isfinite(value):
                raise HaloBenchError(f"{flag} must be a finite number, got {value}.")
        problems = [
            (self.seed < 0, "--seed must be >= 0"),
            (self.epochs is not None and self.epochs < 1, "--epochs must be at least 1"),
            (self.batch_size is not None and self.batch_size < 1, "--batch-size must be at least 1"),
            (self.lr is not None and self.lr <= 0, "--lr must be positive"),
            (self.momentum is not None and not 0 <= self.momentum < 1, "--momentum must lie in [0, 1)"),
            (self.weight_decay is not None and self.weight_decay < 0, "--weight-decay must be >= 0"),
            (self.warmup_epochs is not None and self.warmup_epochs < 0, "--warmup-epochs must be >= 0"),
            (self.embed_dim is not None and self.embed_dim < 1, "--embed-dim must be at least 1"),
            (self.num_workers is not None and self.num_workers < 0, "--num-workers must be >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise HaloBenchError(f"{message}.")

    @property
    def loss_tag(self) -> str:
        """The loss and its non-default knobs, as in run folders: `halo`, `cce+ls0.1`."""
        spec = get_loss(self.loss)
        return spec.tag(_asdict(spec.make_knobs(self.loss_knobs)))

    @property
    def run_name(self) -> str:
        return f"{self.suite}-{self.model}-{self.loss_tag}-s{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a checkpoint to be resumed by this config."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME_FIELDS}


def _asdict(knobs: Any) -> dict[str, Any]:
    return {f.name: getattr(knobs, f.name) for f in fields(knobs)}
