"""Source adapters. `embedded` builds the offline digits suite in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import HaloBenchError
from .base import register_source

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from torch.utils.data import Dataset

    from ..registry import DatasetSpec

# sklearn's digits have 17 intensity levels, 0..16; every embedded set shares them.
EMBEDDED_MAX_LEVEL = 16.0


def _validate_embedded(spec: DatasetSpec, where: str) -> None:
    from .embedded import GENERATORS

    if spec.generator is None:
        raise HaloBenchError(f"{where}: an embedded dataset needs 'generator' (one of {', '.join(GENERATORS)}).")
    if spec.generator not in GENERATORS:
        from ..errors import unknown_name

        raise HaloBenchError(f"{where}: {unknown_name('generator', spec.generator, GENERATORS)}")


def to_model_input(images: np.ndarray, data_config: dict[str, Any]) -> Tensor:
    """uint8 (N, H, W) images in 0..16 -> normalised float (N, C, H', W') per the data config."""
    import torch
    import torch.nn.functional as F

    channels, height, width = data_config["input_size"]
    x = torch.from_numpy(images).float().div_(EMBEDDED_MAX_LEVEL).unsqueeze(1)
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
)
def load_embedded(spec: DatasetSpec, split: str, data_config: dict[str, Any]) -> Dataset:
    import torch
    from torch.utils.data import TensorDataset

    from .embedded import generate

    try:
        images, labels = generate(spec.generator, **spec.split_params(split))
    except (TypeError, ValueError) as exc:
        raise HaloBenchError(f"dataset {spec.name!r}: cannot generate split {split!r}: {exc}") from None
    return TensorDataset(to_model_input(images, data_config), torch.from_numpy(labels).long())
