"""Source adapters: `embedded` (in memory, offline), `torchvision`, `folder`, `imagelist`.

A relative path in a dataset entry (`dir`, `list`, `images`) is read under the data root and
must stay inside it; an absolute path is taken as written. Error messages name files and line
numbers, never what a file contains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import HaloBenchError, unknown_name
from .base import DatasetMissing, LoadOptions, how_to_get, register_source

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from torch.utils.data import Dataset

    from .registry import DatasetSpec

# sklearn's digits have 17 intensity levels, 0..16; every embedded set shares them.
EMBEDDED_MAX_LEVEL = 16.0


def _missing(spec: DatasetSpec, options: LoadOptions, detail: str) -> DatasetMissing:
    return DatasetMissing(
        f"dataset {spec.name!r} is not available under {options.data_root} ({detail}). "
        f"{how_to_get(spec, options.data_root)}"
    )


def _where(spec: DatasetSpec, split: str, key: str, where: str) -> str:
    """Where `key` of `split` is written: in the split's own entry, else in the shared params."""
    return f"{where}.splits.{split}.{key}" if key in spec.splits[split] else f"{where}.params.{key}"


def _check_path(value: Any, where: str) -> None:
    """A path string that, if relative, stays under the data root once `..` is resolved.

    A registry can come from someone else: `list: ../../../etc/passwd` must not make halo-bench
    read files outside the data root. An absolute path is the user's own explicit choice.
    """
    if not isinstance(value, str):
        raise HaloBenchError(f"{where}: expected a path (a string), got {type(value).__name__}.")
    if not os.path.isabs(value) and Path(os.path.normpath(value)).parts[:1] == ("..",):
        raise HaloBenchError(f"{where}: {value!r} leads out of the data root; give a path inside it, "
                             "or an absolute path.")


def _transform(data_config: dict[str, Any], options: LoadOptions) -> Any:
    from .transforms import eval_transform, train_transform

    if options.augment:
        return train_transform(data_config, options.augment)
    return eval_transform(data_config)


# --------------------------------------------------------------------------- embedded


def _validate_embedded(spec: DatasetSpec, where: str) -> None:
    from .embedded import GENERATORS, EmbeddedDataError, check_params

    if spec.generator is None:
        raise HaloBenchError(f"{where}: an embedded dataset needs 'generator' (one of {', '.join(GENERATORS)}).")
    if spec.generator not in GENERATORS:
        raise HaloBenchError(f"{where}: {unknown_name('generator', spec.generator, GENERATORS)}")
    for split in spec.splits:
        try:
            check_params(spec.generator, spec.split_params(split))
        except EmbeddedDataError as exc:
            raise HaloBenchError(f"{where}.splits.{split}: {exc}.") from None


def to_model_input(images: np.ndarray, data_config: dict[str, Any], max_level: float = EMBEDDED_MAX_LEVEL) -> Tensor:
    """uint8 (N, H, W) images in 0..max_level (the embedded sets' 16; a corrupted copy's 255) ->
    normalised float (N, C, H', W') per the data config."""
    import torch
    import torch.nn.functional as F

    channels, height, width = data_config["input_size"]
    x = torch.from_numpy(images).float().div_(max_level).unsqueeze(1)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    x = x.expand(-1, channels, -1, -1)
    mean = torch.tensor(data_config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"]).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


@register_source(
    "embedded",
    "generated in memory from data that installed packages ship (no download)",
    _validate_embedded,
    locate=lambda spec, root: [],
)
def load_embedded(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    import torch
    from torch.utils.data import TensorDataset

    images, labels = embedded_split(spec, split)
    return TensorDataset(to_model_input(images, data_config), torch.from_numpy(labels).long())


def embedded_split(spec: DatasetSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """An embedded split as generated: uint8 (N, 8, 8) images in 0..16 and class indices."""
    import numpy as np

    from .embedded import generate

    try:
        images, labels = generate(spec.generator, **spec.split_params(split))
    except (TypeError, ValueError) as exc:
        raise HaloBenchError(f"dataset {spec.name!r}: cannot generate split {split!r}: {exc}") from None
    if spec.classes is not None:  # generator labels are values (digit 7): index them by `classes`
        index = {name: i for i, name in enumerate(spec.classes)}
        if all(str(v) in index for v in set(labels.tolist())):
            labels = np.array([index[str(v)] for v in labels.tolist()], dtype=np.int64)
    return images, labels


# --------------------------------------------------------------------------- torchvision

# torchvision dataset classes this source builds; each takes root, transform and download.
TORCHVISION_CLASSES = (
    "CIFAR10", "CIFAR100", "SVHN", "MNIST", "FashionMNIST", "KMNIST", "DTD", "Places365",
    "STL10", "Flowers102", "OxfordIIITPet", "Food101", "GTSRB",
)


def _tv_dir(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.params.get("dir", spec.name)


def _tv_parts(spec: DatasetSpec, split: str) -> list[dict[str, Any]]:
    """The constructor keyword sets of one split; `concat` unions several (e.g. all of DTD)."""
    params = {k: v for k, v in spec.split_params(split).items() if k not in ("class", "dir")}
    parts = params.pop("concat", None)
    return [{**params, **part} for part in parts] if parts else [params]


def _validate_torchvision(spec: DatasetSpec, where: str) -> None:
    cls = spec.params.get("class")
    if cls not in TORCHVISION_CLASSES:
        error = unknown_name("torchvision dataset", str(cls), TORCHVISION_CLASSES)
        raise HaloBenchError(f"{where}.params.class: {error}")
    # The folder is `dir`, else the dataset's name: either must stay under the data root.
    _check_path(spec.params.get("dir", spec.name), f"{where}.params.dir" if "dir" in spec.params else where)
    for split in spec.splits:
        concat = spec.split_params(split).get("concat")
        if concat is not None and not (isinstance(concat, list) and all(isinstance(p, dict) for p in concat)):
            raise HaloBenchError(f"{where}.splits.{split}.concat: expected a list of keyword mappings.")


def torchvision_files(spec: DatasetSpec, root: Path) -> list[tuple[str, str, str, Path]]:
    """(URL, file name, MD5, folder) of every archive torchvision would fetch for `spec`.

    Read from torchvision's own class attributes, so the manual route a user behind a
    firewall takes is the one torchvision verifies: put the files in the folder, run
    `halo-bench download` again, and torchvision checks and unpacks them offline.
    """
    import torchvision.datasets as tv

    cls_name = spec.params["class"]
    cls = getattr(tv, cls_name)
    folder = _tv_dir(spec, root)
    parts = [kwargs for split in spec.splits for kwargs in _tv_parts(spec, split)]
    if cls_name in ("CIFAR10", "CIFAR100"):
        return [(cls.url, cls.filename, cls.tgz_md5, folder)]
    if cls_name == "SVHN":
        return [(*cls.split_list[kwargs.get("split", "train")], folder) for kwargs in parts]
    if cls_name == "MNIST":
        wanted = [r for r in cls.resources if any(r[0].startswith("t10k") != kwargs.get("train", True)
                                                  for kwargs in parts)]
        return [(cls.mirrors[0] + name, name, md5, folder / "MNIST" / "raw") for name, md5 in wanted]
    if cls_name == "DTD":
        return [(cls._URL, cls._URL.rsplit("/", 1)[-1], cls._MD5, folder)]
    if cls_name == "Places365":
        out = []
        for kwargs in parts:
            name, md5 = cls._IMAGES_META[(kwargs.get("split", "train-standard"), bool(kwargs.get("small", False)))]
            out.append((cls._BASE_URL + name, name, md5, folder))
        devkit, md5 = cls._DEVKIT_META["challenge" if any("challenge" in str(k.get("split")) for k in parts)
                                       else "standard"]
        out.append((cls._BASE_URL + devkit, devkit, md5, folder))
        return out
    return []


def _download_torchvision(spec: DatasetSpec, root: Path) -> None:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.params["class"])
    for split in spec.splits:
        for kwargs in _tv_parts(spec, split):
            cls(root=str(_tv_dir(spec, root)), download=True, **kwargs)


@register_source(
    "torchvision",
    "a torchvision dataset class, with torchvision's own download and checksum verification",
    _validate_torchvision,
    locate=lambda spec, root: [_tv_dir(spec, root)],
    download=_download_torchvision,
)
def load_torchvision(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    import torchvision.datasets
    from torch.utils.data import ConcatDataset

    cls = getattr(torchvision.datasets, spec.params["class"])
    root = _tv_dir(spec, options.data_root)
    transform = _transform(data_config, options)
    parts = []
    for kwargs in _tv_parts(spec, split):
        try:
            parts.append(cls(root=str(root), transform=transform, download=False, **kwargs))
        except (RuntimeError, FileNotFoundError, OSError):  # torchvision: "not found or corrupted"
            raise _missing(spec, options, f"torchvision found no intact copy in {root}") from None
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


# --------------------------------------------------------------------------- folder


def _validate_folder(spec: DatasetSpec, where: str) -> None:
    for split in spec.splits:
        params = spec.split_params(split)
        if not isinstance(params.get("dir"), str):
            raise HaloBenchError(f"{where}: a folder dataset needs 'dir' (in params or for split {split!r}).")
        _check_path(params["dir"], _where(spec, split, "dir", where))
        if params.get("labels", "none") not in ("none", "subfolders"):
            raise HaloBenchError(f"{where}: 'labels' must be 'none' or 'subfolders'.")


@register_source(
    "folder",
    "image files under a folder (class = first-level subfolder with labels: subfolders)",
    _validate_folder,
    locate=lambda spec, root: sorted({root / spec.split_params(s)["dir"] for s in spec.splits}),
)
def load_folder(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    from .images import ImageFiles, scan_folder

    params = spec.split_params(split)
    folder = options.data_root / params["dir"]
    if not folder.is_dir():
        raise _missing(spec, options, f"no folder {folder}")
    paths, labels, classes = scan_folder(folder, params.get("labels", "none") == "subfolders")
    if not paths:
        raise _missing(spec, options, f"no images in {folder}")
    if spec.classes is not None and classes and list(spec.classes) != classes:
        raise HaloBenchError(f"dataset {spec.name!r}: subfolders {classes[:5]}... differ from its classes.")
    return ImageFiles(paths, labels, _transform(data_config, options))


# --------------------------------------------------------------------------- imagelist


def _validate_imagelist(spec: DatasetSpec, where: str) -> None:
    for split in spec.splits:
        params = spec.split_params(split)
        if not (isinstance(params.get("list"), str) and isinstance(params.get("images"), str)):
            raise HaloBenchError(f"{where}: an imagelist dataset needs 'list' and 'images' (for split {split!r}).")
        for key in ("list", "images"):
            _check_path(params[key], _where(spec, split, key, where))


def _imagelist_paths(spec: DatasetSpec, root: Path) -> list[Path]:
    return sorted({root / spec.split_params(s)[key] for s in spec.splits for key in ("list", "images")})


@register_source(
    "imagelist",
    "a text file of `relative/path label` lines under an image root (OpenOOD's benchmark_imglist)",
    _validate_imagelist,
    locate=_imagelist_paths,
)
def load_imagelist(spec: DatasetSpec, split: str, data_config: dict[str, Any], options: LoadOptions) -> Dataset:
    from .images import ImageFiles, read_image_list

    params = spec.split_params(split)
    list_file = options.data_root / params["list"]
    image_root = options.data_root / params["images"]
    if not list_file.is_file():
        raise _missing(spec, options, f"no list file {list_file}")
    if not image_root.is_dir():
        raise _missing(spec, options, f"no image folder {image_root}")
    paths, labels, lines = read_image_list(list_file, image_root)
    absent = next((line for path, line in zip(paths, lines) if not path.is_file()), None)
    if absent is not None:  # the line number, not the line: the list may be any file
        raise _missing(spec, options, f"line {absent} of {list_file} names an image that is not in {image_root}")
    return ImageFiles(paths, labels, _transform(data_config, options))
