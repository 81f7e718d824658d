"""The device-resident input pipeline: a dataset's uint8 images live on the device once,
and each batch is cropped, flipped and normalised there.

Why: ResNet-18 on CIFAR trains far faster on a GPU than PIL can augment in DataLoader
workers, so the fast public CIFAR trainers (airbench, hlb-CIFAR10) keep the whole set
on the GPU. halo-bench does the same for datasets held in memory as arrays
(torchvision's CIFAR-10/100, SVHN and MNIST family, and the embedded sets); image-file
datasets keep the DataLoader path. Evaluation serves such arrays as tensors on the CPU
too: its batches are unaugmented, so bit-identical, and PIL's cost per image was most of
an evaluation's time beyond the model's (CPU training keeps the DataLoader: `choose_pipeline`).

Semantics are those of the PIL path (`transforms.train_transform`) wherever the
device pipeline is used: pad 4 with black and crop back (`random_crop`), flip with
probability 1/2 (`hflip`), then `x / 255`, minus mean, over std, in that order
(bit-identical to ToTensor + Normalize for an unaugmented image). RGB -> grayscale
uses PIL's integer luma formula. Only the random streams differ: batches come from
one generator seeded by (seed, epoch), so a resumed run sees exactly the batches of
an uninterrupted one, and the global batch of step t is the same for any number of
processes (each takes its slice). Images must already have the model's input size;
anything that needs resizing stays on the DataLoader path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.distributed import rank_batch_size
from ..core.errors import HaloBenchError
from ..core.limits import MAX_SEED
from .base import check_data_pipeline

DEVICE_AUGMENTATIONS = ("random_crop", "hflip")
CROP_PADDING = 4  # the CIFAR recipe, as train_transform's RandomCrop(padding=4)


@dataclass
class ImageArray:
    """A whole split in memory: `images` (N, C, H, W), uint8 pixels (to be normalised) or
    float inputs already normalised (the embedded sets); `labels` (N,) int64."""

    images: Tensor
    labels: Tensor

    @property
    def normalised(self) -> bool:
        return self.images.is_floating_point()

    def __len__(self) -> int:
        return len(self.labels)


def _luma(rgb: Tensor) -> Tensor:
    """PIL's convert('L'): L = (19595 R + 38470 G + 7471 B + 2**15) >> 16, in integers."""
    r, g, b = rgb.to(torch.int32).unbind(dim=1)
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).to(torch.uint8).unsqueeze(1)


def _tv_array(dataset: Any) -> tuple[Tensor, Tensor] | None:
    """(uint8 N,C,H,W images, labels) of a torchvision in-memory dataset, or None."""
    import torchvision.datasets as tv

    if getattr(dataset, "target_transform", None) is not None:
        return None
    if isinstance(dataset, tv.CIFAR10):  # CIFAR100 subclasses it: N,H,W,3
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
        labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    elif isinstance(dataset, tv.SVHN):  # N,3,H,W; labels 0..9 already
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    elif isinstance(dataset, tv.MNIST) and not isinstance(dataset, tv.QMNIST):  # QMNIST: N x 8 targets
        # MNIST, FashionMNIST, KMNIST, EMNIST: a uint8 tensor N,H,W
        images = torch.as_tensor(dataset.data).unsqueeze(1)
        labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    else:
        return None
    return images.contiguous(), labels


def image_array(dataset: Any, data_config: dict[str, Any], train: bool = False) -> tuple[ImageArray | None, str]:
    """The split as one in-memory array in the model's input layout, or (None, why not).

    `train`: the training transform, which resizes to the input size and ignores crop_pct."""
    from torch.utils.data import ConcatDataset, Subset, TensorDataset

    if isinstance(dataset, Subset):  # e.g. `eval --limit`: the inner array, indexed
        inner, why = image_array(dataset.dataset, data_config, train)
        if inner is None:
            return None, why
        index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return ImageArray(inner.images[index], inner.labels[index]), ""
    channels, height, width = data_config["input_size"]
    if isinstance(dataset, TensorDataset):  # the embedded sets: already model inputs
        images, labels = dataset.tensors
        if images.dim() != 4 or tuple(images.shape[1:]) != (channels, height, width):
            return None, f"its tensors have shape {tuple(images.shape[1:])}, not {(channels, height, width)}"
        return ImageArray(images, labels.long()), ""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    arrays = [_tv_array(part) for part in parts]
    if any(a is None for a in arrays):
        return None, f"{type(dataset).__name__} is not an in-memory array dataset (image files are read by workers)"
    images = torch.cat([a[0] for a in arrays if a is not None])
    labels = torch.cat([a[1] for a in arrays if a is not None])
    size = tuple(images.shape[-2:])
    resize = min(height, width) if train else int(min(height, width) / data_config.get("crop_pct", 1.0))
    if size != (height, width) or resize != min(height, width):
        return None, f"its images are {size[0]}x{size[1]} and the input is {height}x{width} (resizing stays on the DataLoader path)"
    if images.shape[1] != channels:
        if images.shape[1] == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()  # PIL's L -> RGB
        elif images.shape[1] == 3 and channels == 1:
            images = _luma(images)
        else:
            return None, f"it has {images.shape[1]} channels and the model takes {channels}"
    return ImageArray(images, labels), ""


def choose_pipeline(requested: str, dataset: Any, data_config: dict[str, Any], augment: tuple[str, ...],
                    device: torch.device, train: bool = False, evaluation: bool = False) -> ImageArray | None:
    """The array to serve from the device, or None for the DataLoader path.

    `auto` serves arrays from GPUs, and from the CPU for `evaluation` (the unaugmented passes
    of `eval_batches`): there the batches are bit-identical to the DataLoader's and skip PIL's
    cost per image. CPU training keeps the DataLoader under `auto`: a DataLoader iterator draws
    from torch's global generator, so serving arrays instead would move every later random
    draw and change earlier CPU training results. `device` insists, with a clear error where
    the data cannot be served that way.
    """
    check_data_pipeline(requested)
    served = device.type == "cuda" or (evaluation and device.type == "cpu")
    if requested == "loader" or (requested == "auto" and not served):
        return None
    array, why = image_array(dataset, data_config, train)
    unsupported = [a for a in augment if a not in DEVICE_AUGMENTATIONS]
    if array is not None and augment and array.normalised:
        array, why = None, "its inputs are already normalised floats and cannot be augmented as pixels"
    elif array is not None and unsupported:
        array, why = None, f"augmentation {unsupported[0]!r} runs on the DataLoader path only"
    if array is None and requested == "device":
        raise HaloBenchError(f"--data-pipeline device cannot serve this data: {why}. "
                             "Use --data-pipeline loader (or auto).")
    return array


def derived_seed(*keys: int) -> int:
    """A 63-bit seed mixed from `keys` (e.g. seed, epoch, rank) by numpy's SeedSequence."""
    # SeedSequence splits an integer into 32-bit words and zero-pads its entropy, so without
    # these two guards (2**32, e) would equal (0, 1, e), and (seed, epoch) would equal
    # (seed, epoch, 0): DDP rank 0's dropout stream would replay the epoch's batch draws.
    if any(not 0 <= key <= MAX_SEED for key in keys):
        raise ValueError(f"derived_seed takes keys in [0, 2**32 - 1], got {keys}")
    return int(np.random.SeedSequence([len(keys), *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """One generator per (seed, epoch): batches do not depend on what ran before."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, epoch))


def draw_offsets(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random crop offsets (dy, dx), each uniform over 0..2*padding, for `n` images."""
    dy = torch.randint(0, 2 * padding + 1, (n,), device=generator.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=generator.device, generator=generator)
    return dy, dx


def random_crop(images: Tensor, padding: int, dy: Tensor, dx: Tensor) -> Tensor:
    """Zero-pad every image by `padding` and cut it back at its offset (dy, dx)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def hflip(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror the images where `flip` (bool, one per image) is set."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


class DeviceBatches:
    """Batches (x, y) on the device, drawn from an `ImageArray` copied there once.

    `batch_size` is the global batch; with `world_size` > 1 each process yields its
    `rank`-th slice of it. Iterating runs the current epoch (`set_epoch`).
    """

    def __init__(self, array: ImageArray, device: torch.device, batch_size: int, data_config: dict[str, Any], *,
                 augment: tuple[str, ...] = (), shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, memory_format: torch.memory_format | None = None) -> None:
        self.per_rank = rank_batch_size(batch_size, world_size)
        self.images = array.images.to(device)
        self.labels = array.labels.to(device)
        self.normalised = array.normalised
        channels = self.images.shape[1]
        self.mean = torch.tensor(data_config["mean"], device=device).view(1, channels, 1, 1)
        self.std = torch.tensor(data_config["std"], device=device).view(1, channels, 1, 1)
        self.device, self.batch_size, self.augment = device, batch_size, tuple(augment)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size, self.memory_format = rank, world_size, memory_format
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, per_rank = len(self.labels), self.per_rank
        generator = epoch_generator(self.device, self.seed, self.epoch)
        order = (torch.randperm(n, device=self.device, generator=generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            # Draws for the whole global batch (the same for any world size); this rank's slice is transformed.
            draws = self.draw(len(index), generator)
            if self.world_size > 1:
                part = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
                index, draws = index[part], {k: v[part] for k, v in draws.items()}
            yield self.transform(self.images[index], draws), self.labels[index]

    def draw(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        draws = {}
        if "random_crop" in self.augment:
            draws["dy"], draws["dx"] = draw_offsets(n, CROP_PADDING, generator)
        if "hflip" in self.augment:
            draws["flip"] = torch.rand(n, device=self.device, generator=generator) < 0.5
        return draws

    def transform(self, images: Tensor, draws: dict[str, Tensor]) -> Tensor:
        if "dy" in draws:
            images = random_crop(images, CROP_PADDING, draws["dy"], draws["dx"])
        if "flip" in draws:
            images = hflip(images, draws["flip"])
        x = images if self.normalised else images.float().div_(255).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format) if self.memory_format is not None else x


def eval_batches(dataset: Any, device: torch.device, batch_size: int, num_workers: int = 0,
                 data_config: dict[str, Any] | None = None, pipeline: str = "loader") -> Any:
    """Unshuffled, unaugmented batches of `dataset` in order: from the device where `pipeline`
    chooses it (`data_config` given; `auto` on the CPU too), else a DataLoader. Either yields (x, y)."""
    from torch.utils.data import DataLoader

    if isinstance(dataset, DeviceBatches):
        return dataset
    array = (choose_pipeline(pipeline, dataset, data_config, (), device, evaluation=True)
             if data_config is not None else None)
    if array is not None:
        return DeviceBatches(array, device, batch_size, data_config)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
