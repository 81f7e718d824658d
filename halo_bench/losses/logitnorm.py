"""LogitNorm (Wei et al., ICML 2022): cross-entropy on logits normalised to norm 1/tau."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import LossSpec, register_loss


@dataclass(frozen=True)
class LogitNormKnobs:
    tau: float = field(default=0.04, metadata={
        "help": "temperature: training logits are f / (tau ||f||) (0.04 as in OpenOOD v1.5 for CIFAR)"})

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau}")


LOGITNORM = register_loss(LossSpec(
    name="logitnorm",
    label="LogitNorm",
    summary="cross-entropy on f / (tau ||f||); evaluation reads the raw logits f",
    knobs=LogitNormKnobs,
    head="halo_bench.losses.linear:LogitNormHead",
))
