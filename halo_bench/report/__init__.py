"""results files -> comparison tables, findings and figures in every format (no torch)."""

from ..core.lazy import lazy_exports

# Public entry points, imported on first use (docs/architecture.md).
_EXPORTS = {"find_results": "tidy", "load_results": "tidy", "render": "render"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
