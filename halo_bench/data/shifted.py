"""The loaders behind the shift sources of shift.py: generated corruptions of an ID test split,
CIFAR-10-C's .npy blocks and ImageNet-C's folders, each as model inputs through the ID set's
evaluation transform."""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from ..core.errors import HaloBenchError
from .base import DatasetMissing, LoadOptions, how_to_get
from .registry import DatasetSpec

# An image-file ID split is decoded into memory to be corrupted: beyond this many bytes of uint8
# pixels (ImageNet's 50,000 at 224 x 224 are 7.5 GB) the published ImageNet-C files are the way.
MAX_GENERATED_BYTES = 2 * 1024**3
# Generated images of on-disk ID sets are kept here under the data root: CIFAR's 70 splits take
# minutes of CPU to make and are the same for every run evaluated on them (2.1 GB for CIFAR).
GENERATED_DIR = "halo-bench-generated"
_RAW_CACHE: dict[str, tuple[np.ndarray, np.ndarray, str, str]] = {}  # the last ID split read, per process
_WARNED: set[str] = set()


class LazySplit(TensorDataset):
    """(inputs, labels) tensors built on first use and dropped by `release()`. Its length is
    known without them, so a feature-cache hit corrupts no image, and an evaluation holds
    one shifted split's inputs at a time."""

    def __init__(self, n: int, build: Callable[[], tuple[Tensor, Tensor]]) -> None:
        self._n, self._build, self._tensors = n, build, None
        self.build_seconds = 0.0  # time spent making the inputs (generating, decoding), for the timing record

    @property  # type: ignore[override]
    def tensors(self) -> tuple[Tensor, Tensor]:
        if self._tensors is None:
            started = time.perf_counter()
            self._tensors = self._build()
            self.build_seconds += time.perf_counter() - started
        return self._tensors

    def __len__(self) -> int:
        return self._n

    def release(self) -> None:
        self._tensors = None


def spec_from_dict(entry: dict[str, Any]) -> DatasetSpec:
    """A DatasetSpec back from its `to_dict()` form (a corrupted set's `of`)."""
    return DatasetSpec(name=entry["name"], source=entry["source"], description=entry.get("description", ""),
                       params=entry.get("params", {}), splits=entry.get("splits", {}),
                       classes=tuple(entry["classes"]) if entry.get("classes") is not None else None,
                       generator=entry.get("generator"), aliases=tuple(entry.get("aliases", ())))


# --------------------------------------------------------------------------- generated


def corrupted_split(spec: DatasetSpec, corruption: str, severity: int, data_config: dict[str, Any],
                    options: LoadOptions) -> LazySplit:
    """The ID test split corrupted by `corruption` at `severity` (corruptions.corrupt, seeded by
    the set's seed), then through the ID set's evaluation transform."""
    from .corruptions import corrupt

    base = spec_from_dict(spec.params["of"])
    images, labels, kind, digest = id_test_images(base, data_config, options)
    seed = int(spec.params.get("seed", 0))

    def build() -> tuple[Tensor, Tensor]:
        if kind == "embedded":  # milliseconds to make, and no data root of its own to keep them in
            corrupted = corrupt(images, corruption, severity, seed)
        else:
            corrupted = stored_corruption(images, digest, corruption, severity, seed, options.data_root)
        return model_inputs(corrupted, data_config, kind), torch.from_numpy(labels)

    return LazySplit(len(labels), build)


def stored_corruption(images: np.ndarray, digest: str, corruption: str, severity: int, seed: int,
                      root: Path) -> np.ndarray:
    """`corrupt(images, ...)`, read from `<root>/halo-bench-generated` when made before (the key:
    the input images' content, corruption, severity, seed and corruptions.VERSION; the file's
    own SHA-256 is checked on every read), else made and stored there (atomically). A data
    root that cannot be written only costs the time to make them again."""
    from ..core.io import atomic_write_bytes, atomic_write_json, sha256_bytes
    from .corruptions import VERSION, corrupt

    key = {"version": VERSION, "images_sha256": digest, "corruption": corruption, "severity": severity, "seed": seed}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = root / GENERATED_DIR / f"{corruption}-s{severity}-{name}.npy"
    cached = _read_stored(path, key, images.shape)
    if cached is not None:
        return cached
    out = corrupt(images, corruption, severity, seed)
    buffer = io.BytesIO()
    np.save(buffer, out, allow_pickle=False)
    data = buffer.getvalue()
    try:  # images first, then the record naming their hash: a kill in between leaves no record, so no hit
        atomic_write_bytes(path, data)
        atomic_write_json(path.with_suffix(".json"), {**key, "sha256": sha256_bytes(data)})
    except (OSError, HaloBenchError) as exc:
        if str(root) not in _WARNED:
            _WARNED.add(str(root))
            from ..core.console import console

            console.print(f"warning: cannot keep generated images under {root / GENERATED_DIR} ({exc}); they are "
                          "made again by every evaluation.", markup=False)
    return out


def _read_stored(path: Path, key: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """The stored images at `path` if its record matches `key` and its bytes their hash, else None."""
    from ..core.io import sha256_bytes

    try:
        record = json.loads(path.with_suffix(".json").read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or {k: record.get(k) for k in key} != key or record.get("sha256") != sha256_bytes(data):
        return None
    try:
        out = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:
        return None
    return out if out.shape == shape and out.dtype == np.uint8 else None


def id_test_images(base: DatasetSpec, data_config: dict[str, Any], options: LoadOptions
                   ) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The ID test split as N x H x W x C images to corrupt (float in [0, 1] for the embedded
    sets' 17 levels, else uint8), its labels, its kind (`embedded`, `array`: torchvision's
    in-memory sets at their stored size, or `files`: decoded, resized and cropped as the
    evaluation transform does, so corrupted at the model's input size) and the images' SHA-256."""
    key = json.dumps([base.to_dict(), data_config, str(options.data_root)], sort_keys=True, default=str)
    if key not in _RAW_CACHE:
        _RAW_CACHE.clear()  # one ID split at a time: a CIFAR test set is 30 MB
        images, labels, kind = _read_id_test(base, data_config, options)
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
        _RAW_CACHE[key] = (images, labels, kind, digest)
    return _RAW_CACHE[key]


def _read_id_test(base: DatasetSpec, data_config: dict[str, Any], options: LoadOptions
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    from .base import SOURCES
    from .device import _tv_array
    from .images import ImageFiles
    from .sources import EMBEDDED_MAX_LEVEL, embedded_split

    if base.source == "embedded":
        levels, labels = embedded_split(base, "test")
        return (levels.astype(np.float64) / EMBEDDED_MAX_LEVEL)[..., None], labels.astype(np.int64), "embedded"
    dataset = SOURCES[base.source].load(base, "test", data_config, options)
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    arrays = [_tv_array(part) for part in parts]
    if all(a is not None for a in arrays):
        images = torch.cat([a[0] for a in arrays]).permute(0, 2, 3, 1).numpy()  # type: ignore[index]
        labels = torch.cat([a[1] for a in arrays]).numpy()  # type: ignore[index]
        return np.ascontiguousarray(images), labels.astype(np.int64), "array"
    if all(isinstance(part, ImageFiles) for part in parts):
        paths = [p for part in parts for p in part.paths]
        labels = np.array([y for part in parts for y in part.labels], dtype=np.int64)
        return _decode(paths, data_config, base.name), labels, "files"
    raise HaloBenchError(f"dataset {base.name!r}: its test split is neither in memory nor image files, so no "
                         "corrupted copy can be generated; give its suite a published shift set.")


def _decode(paths: list[Path], data_config: dict[str, Any], name: str) -> np.ndarray:
    """Image files -> uint8 N x H x W x C after the evaluation transform's mode, resize and crop."""
    from PIL import Image
    from torchvision import transforms as T

    from .transforms import ConvertMode, _interpolation

    channels, height, width = data_config["input_size"]
    if len(paths) * channels * height * width > MAX_GENERATED_BYTES:
        raise HaloBenchError(f"dataset {name!r}: {len(paths)} images at {height}x{width} are too many to corrupt in "
                             "memory; give its suite a published shift set (ImageNet-C's files for ImageNet).")
    geometry = T.Compose([ConvertMode(channels),
                          T.Resize(math.floor(min(height, width) / data_config.get("crop_pct", 1.0)),
                                   interpolation=_interpolation(data_config.get("interpolation", "bilinear"))),
                          T.CenterCrop((height, width))])
    out = np.empty((len(paths), height, width, channels), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(geometry(image.convert("RGB"))).reshape(height, width, channels)
    return out


def model_inputs(images: np.ndarray, data_config: dict[str, Any], kind: str) -> Tensor:
    """uint8 N x H x W x C images -> normalised model inputs, as the clean split's path makes
    them: the embedded sets' `to_model_input`, else ToTensor + Normalize, with the evaluation
    transform's PIL resize and crop first where the images are not at the input size."""
    from .sources import to_model_input
    from .transforms import eval_transform

    channels, height, width = data_config["input_size"]
    if kind == "embedded":
        return to_model_input(images[..., 0], data_config, max_level=255.0)
    resize = math.floor(min(height, width) / data_config.get("crop_pct", 1.0))
    if images.shape[1:] == (height, width, channels) and (kind == "files" or resize == min(height, width)):
        mean = torch.tensor(data_config["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(data_config["std"]).view(1, -1, 1, 1)
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std).contiguous()
    from PIL import Image

    transform = eval_transform(data_config)
    mode = "L" if images.shape[-1] == 1 else "RGB"
    return torch.stack([transform(Image.fromarray(image[..., 0] if mode == "L" else image, mode))
                        for image in images])


# --------------------------------------------------------------------------- published files


def npy_split(spec: DatasetSpec, folder: Path, corruption: str, severity: int, data_config: dict[str, Any],
              options: LoadOptions) -> LazySplit:
    """Severity block `severity` of CIFAR-10-C's `<corruption>.npy` (N x H x W x 3 uint8, severities
    1-5 stacked in blocks of N / 5 rows, the test set's order in each) and of `labels.npy`."""
    images_path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DatasetMissing(f"dataset {spec.name!r}: no {path}. {how_to_get(spec, options.data_root)}")
    images, labels = _read_npy(images_path), _read_npy(labels_path)
    n = len(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3 or n % 5:
        raise HaloBenchError(f"{images_path}: expected uint8 images N x H x W x 3 with N a multiple of 5 "
                             f"(5 severity blocks), got {images.dtype} {images.shape}; re-download the release.")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise HaloBenchError(f"{labels_path}: expected {n} integer labels (one per row of {images_path.name}), "
                             f"got {labels.dtype} {labels.shape}; re-download the release.")
    block = n // 5
    rows = slice((severity - 1) * block, severity * block)
    targets = labels[rows].astype(np.int64)
    classes = len(spec.classes or ())
    if classes and (targets.min() < 0 or targets.max() >= classes):
        raise HaloBenchError(f"{labels_path}: labels {targets.min()}..{targets.max()} do not index the "
                             f"{classes} classes of {spec.name!r}; is it the release of another dataset?")

    def build() -> tuple[Tensor, Tensor]:
        return model_inputs(np.array(images[rows]), data_config, "array"), torch.from_numpy(targets)  # a copy: mmap

    return LazySplit(block, build)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise HaloBenchError(f"{path}: not a readable .npy file ({exc}); re-download the release.") from None


def imagenet_c_split(spec: DatasetSpec, folder: Path, corruption: str, severity: int, data_config: dict[str, Any],
                     options: LoadOptions) -> Dataset:
    """ImageNet-C's `<corruption>/<severity>/<wnid>/*.JPEG`; a wnid's label is its index in sorted
    order (torchvision's ImageFolder, ImageNet's usual class index). The images are already
    cropped to 224 x 224, so only resized to the input size, never cropped again."""
    from .images import ImageFiles, scan_folder
    from .transforms import eval_transform

    where = folder / corruption / str(severity)
    if not where.is_dir():
        raise DatasetMissing(f"dataset {spec.name!r}: no folder {where}. {how_to_get(spec, options.data_root)}")
    paths, labels, classes = scan_folder(where, labelled=True)
    expected = len(spec.classes or ())
    if expected and len(classes) != expected:
        raise HaloBenchError(f"{where} has {len(classes)} class folders and {spec.name!r} has {expected} classes; "
                             "labels would shift. Restore the missing wnid folders (re-extract the archive).")
    return ImageFiles(paths, labels, eval_transform({**data_config, "crop_pct": 1.0}))
