"""The source registry: one adapter per kind of on-disk (or in-package) dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.cpus import usable_cpus
from ..core.errors import HaloBenchError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from .registry import DatasetSpec

DATA_ROOT_ENV = "HALO_BENCH_DATA"
# torchvision classes that hold a whole split as one array in memory (data/device.py's _tv_array):
# a DataLoader worker would only copy it, so they load in the main process by default.
IN_MEMORY_TORCHVISION = ("CIFAR10", "CIFAR100", "SVHN", "MNIST", "FashionMNIST", "KMNIST")
MAX_DEFAULT_WORKERS = 8
DEFAULT_DATA_ROOT = "data"


def resolve_data_root(path: str | os.PathLike[str] | None = None,
                      fallback: str | os.PathLike[str] | None = None) -> Path:
    """`path`, else $HALO_BENCH_DATA, else `fallback`, else ./data; absolute, so runs record
    where their data came from."""
    chosen = path if path is not None else os.environ.get(DATA_ROOT_ENV) or fallback or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class LoadOptions:
    """Where datasets live and which training augmentations to apply (none for evaluation)."""

    data_root: Path
    augment: tuple[str, ...] = ()


class DatasetMissing(HaloBenchError):
    """A dataset is not on disk; the message says how to get it."""


Loader = Callable[["DatasetSpec", str, dict[str, Any], LoadOptions], "Dataset"]
Validator = Callable[["DatasetSpec", str], None]
Locator = Callable[["DatasetSpec", Path], list[Path]]
Downloader = Callable[["DatasetSpec", Path], None]
# (URL, file name, MD5, folder) of each archive a user may fetch by hand
ManualFiles = Callable[["DatasetSpec", Path], list[tuple[str, str, str, Path]]]


@dataclass(frozen=True)
class Source:
    """How to build a split of a dataset: `load(spec, split, data_config, options)`.

    `validate(spec, where)` checks a registry entry at load time; `locate(spec, root)`
    names the paths it reads (empty: nothing on disk); `download` is set only where
    the data can be fetched with verification (torchvision's downloads); `files` names
    the archives to fetch by hand where a download fails (None: torchvision's own).
    """

    name: str
    load: Loader
    validate: Validator
    description: str
    locate: Locator
    download: Downloader | None = None
    files: ManualFiles | None = None


SOURCES: dict[str, Source] = {}


def register_source(name: str, description: str, validate: Validator, locate: Locator,
                    download: Downloader | None = None, files: ManualFiles | None = None
                    ) -> Callable[[Loader], Loader]:
    """Decorator: register `load(spec, split, data_config, options) -> Dataset` as the source `name`.

    Registry entries with `source: name` are then built by it. `validate(spec, where)` raises
    `HaloBenchError` for an entry it cannot use (`where` is the entry's path in the YAML);
    `locate(spec, root)` lists the paths the dataset occupies under the data root (empty: it
    needs none), for `halo-bench datasets`; `download(spec, root)`, where given, fetches it
    with verification for `halo-bench download`; `files(spec, root)` names the archives to fetch
    by hand where it cannot. A missing dataset raises `DatasetMissing`
    whose message says how to get it.
    """

    def wrap(load: Loader) -> Loader:
        SOURCES[name] = Source(name, load, validate, description, locate, download, files)
        return load

    return wrap


def how_to_get(spec: DatasetSpec, data_root: Path) -> str:
    """The instruction for getting `spec` into `data_root`."""
    if spec.download:
        return spec.download.format(root=data_root, name=spec.name).strip()
    source = SOURCES[spec.source]
    if source.download is not None:
        by_hand = "".join(f" Or fetch {url} (MD5 {md5}) into {folder} and run it again: the file is checked "
                          "and unpacked offline." for url, _, md5, folder in
                          (source.files(spec, data_root) if source.files else []))
        return f"Run `halo-bench download {spec.name} --data-root {data_root}` (verified download).{by_hand}"
    paths = source.locate(spec, data_root)
    if paths:
        where = f" (see {spec.homepage})" if spec.homepage else ""
        return f"Put its files at {', '.join(map(str, paths))}{where}; halo-bench cannot download it."
    return "It is generated in memory; nothing to download."


def dataset_labels(dataset: Any) -> Any:
    """All labels of a dataset without loading its images, or None where that is not cheap."""
    import numpy as np
    from torch.utils.data import ConcatDataset, TensorDataset

    if isinstance(dataset, ConcatDataset):
        parts = [dataset_labels(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    for attr in ("labels", "targets", "_labels"):  # ImageFiles, torchvision's classes
        values = getattr(dataset, attr, None)
        if values is not None and not callable(values):
            return np.asarray(values).reshape(-1)
    return None


def check_labels(spec: DatasetSpec, dataset: Any, num_classes: int) -> None:
    """An ID dataset's labels must index its classes, or training fails deep inside the loss."""
    labels = dataset_labels(dataset)
    if labels is None or len(labels) == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise HaloBenchError(
            f"dataset {spec.name!r} has unlabelled images (label {low}); an ID dataset needs a class "
            "label for every image (a subfolder per class, or a label on every image-list line)."
        )
    if high >= num_classes:
        raise HaloBenchError(
            f"dataset {spec.name!r} has labels {low}..{high}, but its registry entry names "
            f"{num_classes} classes (labels 0..{num_classes - 1}); fix its 'classes'."
        )


def in_memory(spec: DatasetSpec) -> bool:
    """Whether the dataset's splits are arrays in memory (embedded sets, CIFAR, SVHN, MNIST family)."""
    return spec.source == "embedded" or (spec.source == "torchvision"
                                         and spec.params.get("class") in IN_MEMORY_TORCHVISION)


def default_workers(spec: DatasetSpec, requested: int | None) -> int:
    """DataLoader workers: as asked, else none for in-memory data and, for image files, up to 8
    of the CPUs this process may use."""
    if requested is not None:
        return requested
    return 0 if in_memory(spec) else min(MAX_DEFAULT_WORKERS, usable_cpus())


@dataclass(frozen=True)
class Presence:
    """Whether a dataset is on disk under a data root, and how much of it."""

    status: str  # "present", "missing" or "in package"
    size_bytes: int = 0
    size_complete: bool = True  # False when the walk stopped early on a huge folder


def presence(spec: DatasetSpec, data_root: Path, max_files: int = 200_000) -> Presence:
    paths = SOURCES[spec.source].locate(spec, data_root)
    if not paths:
        return Presence("in package")
    if not all(p.is_file() or (p.is_dir() and any(p.iterdir())) for p in paths):
        return Presence("missing")
    total, seen = 0, 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
            continue
        for folder, _, files in os.walk(path):
            for name in files:
                seen += 1
                if seen > max_files:
                    return Presence("present", total, size_complete=False)
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                except OSError:
                    pass
    return Presence("present", total)


DATA_PIPELINES = ("auto", "device", "loader")  # halo_bench/data/device.py


def check_data_pipeline(name: str) -> None:
    """`--data-pipeline` names one of DATA_PIPELINES (train and eval alike)."""
    if name not in DATA_PIPELINES:
        raise HaloBenchError(f"--data-pipeline must be one of {', '.join(DATA_PIPELINES)}, not {name!r}.")
