"""OOD detectors, registered by name. Add one by subclassing `Detector` in a module
imported here and decorating it with `@register_detector`."""

from __future__ import annotations

from . import gaussian, gen, halo, knn, logits, mahalanobis, odin, shaping, vim  # noqa: F401  (register them)
from .base import (
    DETECTORS,
    Detector,
    DetectorContext,
    detectors_for,
    format_value,
    make_detector,
    parse_detector_spec,
    register_detector,
    settings_label,
)

# Listing order (tables, `halo-bench detectors`): the classic baselines, the modern field, HALO's own.
_ORDER = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "gen", "knn", "vim", "react", "ash", "mds", "rmds")
for _name in [*_ORDER, *(n for n in list(DETECTORS) if n not in _ORDER)]:
    DETECTORS[_name] = DETECTORS.pop(_name)

__all__ = ["DETECTORS", "Detector", "DetectorContext", "detectors_for", "format_value", "make_detector",
           "parse_detector_spec", "register_detector", "settings_label"]
