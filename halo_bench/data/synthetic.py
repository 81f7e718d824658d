"""CIFAR-format archives of random images, for tests and throughput benchmarks.

The files have the exact layout and pickled fields of the real CIFAR python
archives, so torchvision's loader reads them; only the checksums differ.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    labels = [int(i % classes) for i in range(n)]
    # Class-dependent brightness, so a model can learn something in one epoch.
    data = rng.integers(0, 128, size=(n, 3072)) + (np.array(labels)[:, None] % 10) * 12
    return data.astype(np.uint8), labels


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar_archive(root: str | Path, variant: str = "cifar10", n_train: int = 100, n_test: int = 40,
                        seed: int = 0) -> Path:
    """Write `root/cifar-10-batches-py` (5 train batches) or `root/cifar-100-python`; returns the folder."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
        for i, n in enumerate(sizes, start=1):
            data, labels = _rows(rng, n, 10)
            _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": data,
                                               "labels": labels, "filenames": []})
        data, labels = _rows(rng, n_test, 10)
        _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": data, "labels": labels,
                                      "filenames": []})
        _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": sizes[0]})
    elif variant == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", n_train), ("test", n_test)):
            data, labels = _rows(rng, n, 100)
            _dump(folder / name, {"data": data, "fine_labels": labels, "coarse_labels": [x // 5 for x in labels]})
        _dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                "coarse_label_names": [f"superclass{i}" for i in range(20)]})
    else:
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    return folder
