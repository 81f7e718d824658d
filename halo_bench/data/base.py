"""The source registry: one adapter per kind of on-disk (or in-package) dataset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..registry import DatasetSpec

Loader = Callable[["DatasetSpec", str, dict[str, Any]], "Dataset"]
Validator = Callable[["DatasetSpec", str], None]


@dataclass(frozen=True)
class Source:
    """How to build a split of a dataset: `load(spec, split, data_config)`.

    `validate(spec, where)` checks a registry entry at load time and raises a
    HaloBenchError naming `where` when it is malformed.
    """

    name: str
    load: Loader
    validate: Validator
    description: str


SOURCES: dict[str, Source] = {}


def register_source(name: str, description: str, validate: Validator) -> Callable[[Loader], Loader]:
    def wrap(load: Loader) -> Loader:
        SOURCES[name] = Source(name, load, validate, description)
        return load

    return wrap
