"""Categorical cross-entropy on a linear head: the baseline, and with label smoothing a control."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import LossSpec, register_loss


@dataclass(frozen=True)
class CCEKnobs:
    label_smoothing: float = field(default=0.0, metadata={"aliases": ("--smoothing",),
        "help": "mass spread uniformly over the K classes (0 = plain CCE; 0.1 matches HALO's default)"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")


CCE = register_loss(LossSpec(
    name="cce",
    label="CCE",
    summary="cross-entropy on a linear head (the baseline); label_smoothing makes the smoothing control",
    knobs=CCEKnobs,
    head="halo_bench.losses.linear:LinearHead",
    short={"label_smoothing": "ls"},
))
