"""Data: source adapters that turn registry entries into datasets of model inputs.

Add a source by decorating a loader with `register_source` in a module imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import sources as _sources  # noqa: F401  (fills SOURCES)
from .base import (
    DATA_ROOT_ENV,
    SOURCES,
    DatasetMissing,
    LoadOptions,
    Presence,
    Source,
    check_labels,
    default_workers,
    how_to_get,
    presence,
    register_source,
    resolve_data_root,
)

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..registry import DatasetSpec

__all__ = [
    "DATA_ROOT_ENV", "SOURCES", "DatasetMissing", "LoadOptions", "Presence", "Source", "check_labels",
    "default_workers",
    "how_to_get", "load_split", "presence", "register_source", "resolve_data_root",
]


def load_split(spec: DatasetSpec, split: str, data_config: dict[str, Any],
               options: LoadOptions | None = None) -> Dataset:
    """Build `split` of `spec` as (input tensor, label) pairs for the given data config."""
    return SOURCES[spec.source].load(spec, split, data_config, options or LoadOptions(resolve_data_root()))
