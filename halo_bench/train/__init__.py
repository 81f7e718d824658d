"""The training stage: its config, the run's setup, the step and the loop."""

from ..core.lazy import lazy_exports

# Public entry points, imported on first use (docs/architecture.md).
_EXPORTS = {"TrainConfig": "config", "train": "loop"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
