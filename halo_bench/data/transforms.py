"""PIL -> tensor transforms from a timm-style data config.

Every OOD set goes through the ID set's evaluation transform, so an SVHN or LSUN
image reaches a CIFAR model exactly as a CIFAR test image does.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.errors import HaloBenchError
from .registry import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "eval_transform", "train_transform"]


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError:
        raise HaloBenchError(f"unknown interpolation {name!r}; use bilinear, bicubic or nearest.") from None


class ConvertMode:
    """PIL mode conversion as a picklable callable (DataLoader workers may be spawned)."""

    def __init__(self, channels: int) -> None:
        mode = {1: "L", 3: "RGB"}.get(channels)
        if mode is None:
            raise HaloBenchError(f"image sources support 1 or 3 input channels, not {channels}.")
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        return image.convert(self.mode)


def eval_transform(data_config: dict[str, Any]) -> Any:
    """Resize the shorter side to size / crop_pct, centre-crop, tensor, normalise (as timm)."""
    from torchvision import transforms as T

    channels, height, width = data_config["input_size"]
    scale = math.floor(min(height, width) / data_config.get("crop_pct", 1.0))
    return T.Compose([
        ConvertMode(channels),
        T.Resize(scale, interpolation=_interpolation(data_config.get("interpolation", "bilinear"))),
        T.CenterCrop((height, width)),
        T.ToTensor(),
        T.Normalize(data_config["mean"], data_config["std"]),
    ])


def train_transform(data_config: dict[str, Any], augment: tuple[str, ...]) -> Any:
    """The evaluation geometry plus the named augmentations (CIFAR: random_crop, hflip)."""
    from torchvision import transforms as T

    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise HaloBenchError(f"unknown augmentation {unknown[0]!r}; known: {', '.join(AUGMENTATIONS)}.")
    channels, height, width = data_config["input_size"]
    interpolation = _interpolation(data_config.get("interpolation", "bilinear"))
    steps: list[Any] = [ConvertMode(channels)]
    if "random_resized_crop" in augment:
        steps.append(T.RandomResizedCrop((height, width), interpolation=interpolation))
    else:
        steps += [T.Resize(min(height, width), interpolation=interpolation), T.CenterCrop((height, width))]
    if "random_crop" in augment:
        steps.append(T.RandomCrop((height, width), padding=4))  # the CIFAR recipe: pad 4, crop
    if "hflip" in augment:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(data_config["mean"], data_config["std"])]
    return T.Compose(steps)
