"""The HALO loss: distance logits to learned centroids plus an abstain class at the origin."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import LossSpec, register_loss


@dataclass(frozen=True)
class HALOKnobs:
    label_smoothing: float = field(default=0.1, metadata={"aliases": ("--smoothing",),
        "help": "sets the target mass and the closed-form abstain bias"})
    distill: bool = field(default=True, metadata={
        "help": "self-distilled negative targets (true) or plain label smoothing (false)"})
    learn_gamma: bool = field(default=True, metadata={"flag": "--learn-gamma/--freeze-gamma",
        "help": "learn the temperature (true) or keep its closed-form initial value (false)"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")


HALO = register_loss(LossSpec(
    name="halo",
    label="HALO",
    summary="distance logits to mean-centred centroids + a parameter-free abstain class (docs/method.md)",
    knobs=HALOKnobs,
    head="halo_bench.losses.halo_head:HALOHead",
    short={"label_smoothing": "ls"},
    abstain=True,
))
