"""The main job: every loss x seed trained, evaluated and reported, inline or as cluster jobs."""

from ..core.lazy import lazy_exports

# Public entry points, imported on first use (docs/architecture.md).
_EXPORTS = {"BenchConfig": "sweep", "run_bench": "sweep"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
