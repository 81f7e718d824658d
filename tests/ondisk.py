"""Writers of tiny datasets in the exact on-disk formats the real downloads have.

The bytes are random; the layout, file names, container formats and field names are
those torchvision, the ODIN release and OpenOOD's image lists use, so the real
loading code runs on them. Only checksums differ (the tests bypass that check alone).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from halo_bench.data.synthetic import write_cifar_archive


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_svhn(root: Path, n: int = 30, seed: int = 2) -> None:
    """root/test_32x32.mat: MATLAB v5 with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = _rng(seed)
    root.mkdir(parents=True)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    savemat(root / "test_32x32.mat", {"X": x, "y": y})


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 2049 if array.ndim == 1 else 2051
    with open(path, "wb") as f:
        f.write(struct.pack(">" + "i" * (array.ndim + 1), magic, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n: int = 30, seed: int = 3) -> None:
    """root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (big-endian IDX files)."""
    rng = _rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def _image(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)


def write_dtd(root: Path, per_class: int = 3, seed: int = 4) -> None:
    """root/dtd/dtd/{images/<class>/*.jpg, labels/{train,val,test}1.txt}."""
    rng = _rng(seed)
    base = root / "dtd" / "dtd"
    classes = ["banded", "cracked"]
    names = []
    for cls in classes:
        for i in range(per_class * 3):
            name = f"{cls}/{cls}_{i:04d}.jpg"
            _image(base / "images" / name, rng, (48, 40))
            names.append(name)
    (base / "labels").mkdir(parents=True)
    for k, split in enumerate(("train", "val", "test")):
        (base / "labels" / f"{split}1.txt").write_text("\n".join(names[k::3]) + "\n")


def write_places365_val(root: Path, n: int = 12, seed: int = 5) -> None:
    """root/{categories_places365.txt, places365_val.txt, val_256/*.jpg} (torchvision's small val)."""
    rng = _rng(seed)
    root.mkdir(parents=True)
    (root / "categories_places365.txt").write_text("/a/abbey 0\n/b/beach 1\n")
    lines = []
    for i in range(n):
        name = f"Places365_val_{i + 1:08d}.jpg"
        _image(root / "val_256" / name, rng, (64, 64))
        lines.append(f"{name} {i % 2}")
    (root / "places365_val.txt").write_text("\n".join(lines) + "\n")


def write_image_folder(folder: Path, n: int = 15, size: tuple[int, int] = (36, 36), seed: int = 6) -> None:
    """A flat folder of JPEGs below one subfolder, as the ODIN release's LSUN/test/."""
    rng = _rng(seed)
    for i in range(n):
        _image(folder / "test" / f"{i}.jpg", rng, size)


def write_image_list(root: Path, list_path: str, folder: str, n: int = 14, seed: int = 7) -> None:
    """OpenOOD's format: `relative/path label` lines, images under an image root."""
    rng = _rng(seed)
    lines = []
    for i in range(n):
        rel = f"{folder}/val_{i}.JPEG"
        _image(root / "openood" / "images_classic" / rel, rng, (64, 64))
        lines.append(f"{rel} -1")
    list_file = root / list_path
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text("\n".join(lines) + "\n")


def write_cifar10_suite(root: Path) -> None:
    """Every dataset of the `cifar10` suite, plus the ODIN LSUN crop folder."""
    write_cifar_archive(root / "cifar10", "cifar10", n_train=100, n_test=40)
    write_cifar_archive(root / "cifar100", "cifar100", n_train=200, n_test=100, seed=1)
    write_svhn(root / "svhn")
    write_mnist(root / "mnist")
    write_dtd(root / "dtd")
    write_places365_val(root / "places365")
    write_image_folder(root / "LSUN")
    write_image_list(root, "openood/benchmark_imglist/cifar10/test_tin.txt", "tin/val/images")
    # OpenOOD's download also brings the OOD-validation list the `-openood` suites tune on.
    write_image_list(root, "openood/benchmark_imglist/cifar10/val_tin.txt", "tin/train/images", n=6, seed=8)
