"""The model stage: timm backbones + embedding + head, checkpoints, weights in, foreign classifiers."""

from ..core.lazy import lazy_exports

# Public entry points, imported on first use (docs/architecture.md).
_EXPORTS = {"Classifier": "classifier", "build_model": "classifier", "load_checkpoint": "checkpoint", "load_model": "load", "save_checkpoint": "checkpoint"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
