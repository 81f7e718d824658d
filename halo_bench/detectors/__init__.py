"""OOD detectors, registered by name. Add one by subclassing `Detector` in a module
imported here and decorating it with `@register_detector`."""

from __future__ import annotations

from . import halo, logits, mahalanobis, odin  # noqa: F401  (register the detectors)
from .base import DETECTORS, Detector, DetectorContext, detectors_for, register_detector

__all__ = ["DETECTORS", "Detector", "DetectorContext", "detectors_for", "register_detector"]
