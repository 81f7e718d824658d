"""Image files on disk: a folder tree, or an OpenOOD-style list of `relative/path label` lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..core.errors import HaloBenchError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFiles(Dataset):
    """(transformed image, label) for a fixed list of files; label -1 when unlabelled."""

    def __init__(self, paths: list[Path], labels: list[int], transform: Callable[[Any], Any]) -> None:
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise HaloBenchError(f"cannot read image {path}: {exc}") from None
        return self.transform(image), self.labels[index]


def scan_folder(root: Path, labelled: bool) -> tuple[list[Path], list[int], list[str]]:
    """Every image under `root`, sorted. With `labelled`, the first-level folder is the class."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not labelled:
        return paths, [-1] * len(paths), []
    nested = [(p, p.relative_to(root).parts[0]) for p in paths if len(p.relative_to(root).parts) > 1]
    classes = sorted({folder for _, folder in nested})
    index = {c: i for i, c in enumerate(classes)}
    return [p for p, _ in nested], [index[folder] for _, folder in nested], classes


def read_image_list(list_file: Path, image_root: Path) -> tuple[list[Path], list[int], list[int]]:
    """Parse `relative/path [label]` lines (OpenOOD's benchmark_imglist format) into image
    paths, labels and the line number of each. Errors quote no line: the file may be anything."""
    paths, labels, numbers = [], [], []
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HaloBenchError(f"{list_file} is not a UTF-8 text file of image paths.") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        label = -1
        if len(parts) == 2 and _is_int(parts[1]):
            line, label = parts[0], int(parts[1])
        if Path(line).is_absolute() or ".." in Path(line).parts:
            raise HaloBenchError(f"{list_file}:{number}: image paths must be relative to the image root.")
        paths.append(image_root / line)
        labels.append(label)
        numbers.append(number)
    if not paths:
        raise HaloBenchError(f"{list_file} lists no images.")
    return paths, labels, numbers


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
