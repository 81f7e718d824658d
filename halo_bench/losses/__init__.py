"""Training losses, one registry: each loss declares its head, its knobs and its label.

Importing this package imports no torch (the heads load when a model is built), so
the command line checks a loss name and its knobs instantly. Add a loss by writing
its head and calling `register_loss(LossSpec(...))`; see `cce.py` for the shape.
"""

from __future__ import annotations

from typing import Any

from . import cce, halo, logitnorm  # noqa: F401  (register the built-in losses)
from .base import LOSSES, LossSpec, get_loss, knob_fields, parse_loss, register_loss

__all__ = ["LOSSES", "HALOHead", "LinearHead", "LogitNormHead", "LossSpec", "get_loss", "knob_fields", "parse_loss",
           "register_loss"]


def __getattr__(name: str) -> Any:
    if name in ("LinearHead", "LogitNormHead"):
        from . import linear

        return getattr(linear, name)
    if name == "HALOHead":
        from . import halo_head

        return halo_head.HALOHead
    raise AttributeError(f"module 'halo_bench.losses' has no attribute {name!r}")
