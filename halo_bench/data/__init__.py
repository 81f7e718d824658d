"""Data: source adapters that turn registry entries into datasets of model inputs.

Add a source by decorating a loader with `register_source` in a module imported here
(sources.py; shift.py for the covariate-shifted ID sets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import shift as _shift  # noqa: F401  (the shift sources)
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
    import os

    from torch.utils.data import Dataset

    from .registry import DatasetSpec, Registry

__all__ = [
    "DATA_ROOT_ENV", "SOURCES", "DatasetMissing", "LoadOptions", "Presence", "Source", "check_labels",
    "default_workers",
    "how_to_get", "load_registry", "load_split", "presence", "register_source", "resolve_data_root",
]


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate a dataset registry (`path`, else $HALO_BENCH_DATASETS, else the
    packaged datasets.yaml), checking each entry against its data source."""
    from .registry import read_registry

    return read_registry({name: source.validate for name, source in SOURCES.items()}, path)


def load_split(spec: DatasetSpec, split: str, data_config: dict[str, Any],
               options: LoadOptions | None = None) -> Dataset:
    """Build `split` of `spec` as (input tensor, label) pairs for the given data config."""
    return SOURCES[spec.source].load(spec, split, data_config, options or LoadOptions(resolve_data_root()))
