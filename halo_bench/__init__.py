"""halo-bench: compare cross-entropy and the HALO loss on calibration and OOD detection.

The heads are imported lazily so that `halo-bench --help` does not import torch.
"""

from __future__ import annotations

from typing import Any

from .core.provenance import __version__

__all__ = ["HALOHead", "LinearHead", "LogitNormHead", "__version__", "with_halo_head"]


def __getattr__(name: str) -> Any:
    if name in ("HALOHead", "LinearHead", "LogitNormHead"):
        from . import losses

        return getattr(losses, name)
    if name == "with_halo_head":
        from .models.finetune import with_halo_head

        return with_halo_head
    raise AttributeError(f"module 'halo_bench' has no attribute {name!r}")
