"""The evaluation stage: a checkpoint on its suite -> results (metrics, calibration, tuning)."""

from ..core.lazy import lazy_exports

# Public entry points, imported on first use (docs/architecture.md).
_EXPORTS = {"EvalConfig": "run", "evaluate": "run", "summarize": "run"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
