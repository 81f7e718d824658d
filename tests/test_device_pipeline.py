"""The device-resident input pipeline (halo_bench/data/device.py), run on the CPU: the same
code path a GPU runs, checked against torchvision's PIL transforms and PIL itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import LoadOptions, load_split
from halo_bench.data.device import (
    CROP_PADDING,
    DeviceBatches,
    ImageArray,
    choose_pipeline,
    draw_offsets,
    image_array,
    random_crop,
)

CPU = torch.device("cpu")
CONFIG = {"input_size": [3, 12, 12], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "crop_pct": 1.0}


def _coded_images(n: int, size: int = 12) -> torch.Tensor:
    """uint8 images whose pixel (i, j) holds 1 + size*i + j: every pixel says where it came from."""
    code = 1 + torch.arange(size * size, dtype=torch.int32).view(size, size)
    return code.to(torch.uint8).expand(n, 3, size, size).contiguous()


def _offsets_and_flips(batch: torch.Tensor, size: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, flipped) of each cropped image, read back from the pixel codes."""
    dys, dxs, flips = [], [], []
    for image in batch[:, 0]:
        i, j = np.argwhere(image.numpy() > 0)[0]  # the first real pixel; at least 8 real ones follow in its row
        flipped = bool(image[i, j + 1] < image[i, j])  # codes fall from left to right
        row, col = divmod(int(image[i, j]) - 1, size)
        j_crop = size - 1 - j if flipped else j  # its column before the flip
        dys.append(row - i + CROP_PADDING)
        dxs.append(col - j_crop + CROP_PADDING)
        flips.append(flipped)
    return np.array(dys), np.array(dxs), np.array(flips)


def test_random_crop_matches_torchvision_pad_and_crop_at_every_offset() -> None:
    from torchvision.transforms import functional as TF

    images = torch.randint(0, 256, (81, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dy, dx = draw_offsets(81, CROP_PADDING, torch.Generator().manual_seed(3))
    cropped = random_crop(images, CROP_PADDING, dy, dx)
    assert set(dy.tolist()) <= set(range(9)) and set(dx.tolist()) <= set(range(9))
    for k in range(81):
        expected = TF.crop(TF.pad(images[k], [CROP_PADDING] * 4, fill=0), int(dy[k]), int(dx[k]), 12, 12)
        assert torch.equal(cropped[k], expected), k


def test_crop_offsets_are_uniform_and_flips_fair() -> None:
    n = 8100
    batches = DeviceBatches(ImageArray(_coded_images(n), torch.zeros(n, dtype=torch.long)), CPU, n,
                            {**CONFIG, "mean": [0.0] * 3, "std": [1 / 255] * 3}, augment=("random_crop", "hflip"),
                            shuffle=True, seed=5)
    (x, _), = list(batches)
    pixels = x.round().to(torch.int32)
    dy, dx, flipped = _offsets_and_flips(pixels)
    offsets = 2 * CROP_PADDING + 1
    counts = np.bincount(dy * offsets + dx, minlength=offsets * offsets)
    assert counts.min() > 0  # every one of the 81 offsets occurs
    assert stats.chisquare(counts).pvalue > 1e-4
    assert stats.binomtest(int(flipped.sum()), n, 0.5).pvalue > 1e-4
    # Pixels outside the image are black (0 before normalisation), as torchvision pads.
    border = dy == 0  # the crop starts 4 rows above the image
    assert (pixels[border, :, :CROP_PADDING] == 0).all()


def test_unaugmented_batches_are_bit_identical_to_totensor_and_normalize(tmp_path: Path, monkeypatch) -> None:
    """The eval path on CIFAR-format data: the device pipeline equals the PIL DataLoader exactly."""
    import torchvision.datasets.cifar as tv_cifar
    from torch.utils.data import DataLoader

    from halo_bench.data import load_registry
    from halo_bench.data.synthetic import write_cifar_archive

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # random stand-in bytes
    write_cifar_archive(tmp_path / "cifar10", "cifar10", n_train=20, n_test=30)
    registry = load_registry()
    config = registry.suite("cifar10").data_config
    dataset = load_split(registry.dataset("cifar10"), "test", config, LoadOptions(tmp_path))
    array = choose_pipeline("device", dataset, config, (), CPU)
    assert array is not None and array.images.dtype == torch.uint8
    served = list(DeviceBatches(array, CPU, 8, config))
    loaded = list(DataLoader(dataset, batch_size=8))
    assert len(served) == len(loaded) == 4
    for (xa, ya), (xb, yb) in zip(served, loaded, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    gray = {**config, "input_size": [1, 32, 32], "mean": [0.5], "std": [0.25]}  # a grayscale model
    gray_set = load_split(registry.dataset("cifar10"), "test", gray, LoadOptions(tmp_path))
    (xa, _), = list(DeviceBatches(choose_pipeline("device", gray_set, gray, (), CPU), CPU, 30, gray))
    (xb, _), = list(DataLoader(gray_set, batch_size=30))
    assert torch.equal(xa, xb)  # PIL's integer luma formula, reproduced
    # crop_pct < 1 resizes evaluation images (to 36 before the 32 crop): the DataLoader's job. Training
    # ignores crop_pct, so the train transform stays the identity and the device can serve it.
    pct = {**config, "crop_pct": 0.875}
    assert image_array(dataset, pct)[0] is None and image_array(dataset, pct, train=True)[0] is not None


def test_luma_is_pils_convert_l_on_random_images() -> None:
    from PIL import Image

    from halo_bench.data.device import _luma

    rgb = torch.randint(0, 256, (20, 3, 7, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ours = _luma(rgb)[:, 0].numpy()
    theirs = np.stack([np.asarray(Image.fromarray(img.permute(1, 2, 0).numpy()).convert("L")) for img in rgb])
    assert np.array_equal(ours, theirs)


def _epoch(batches: DeviceBatches, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches.set_epoch(epoch)
    return list(batches)


def test_batches_depend_only_on_seed_and_epoch_so_a_resumed_run_sees_the_same() -> None:
    n = 50
    array = ImageArray(torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8), torch.arange(n))

    def make(seed: int) -> DeviceBatches:
        return DeviceBatches(array, CPU, 16, CONFIG, augment=("random_crop", "hflip"), shuffle=True, seed=seed,
                             drop_last=True)

    straight = make(0)
    first, second = _epoch(straight, 0), _epoch(straight, 1)
    resumed = _epoch(make(0), 1)  # a fresh process, starting at epoch 2
    assert len(first) == len(straight) == 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(second, resumed, strict=True))
    assert not torch.equal(first[0][1], second[0][1])  # a new order each epoch
    assert not torch.equal(_epoch(make(1), 0)[0][1], first[0][1])  # and per seed
    labels = torch.cat([y for _, y in first])
    assert len(set(labels.tolist())) == len(labels) == 48  # a permutation: no image twice per epoch


def test_each_rank_takes_its_slice_of_the_same_global_batch() -> None:
    n = 64
    array = ImageArray(torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8), torch.arange(n))
    kwargs = {"augment": ("random_crop", "hflip"), "shuffle": True, "seed": 2, "drop_last": True}
    whole = list(DeviceBatches(array, CPU, 16, CONFIG, **kwargs))
    parts = [list(DeviceBatches(array, CPU, 16, CONFIG, rank=r, world_size=2, **kwargs)) for r in (0, 1)]
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), x)
        assert torch.equal(torch.cat([parts[0][step][1], parts[1][step][1]]), y)
    with pytest.raises(HaloBenchError, match="must divide by the 3 processes"):
        DeviceBatches(array, CPU, 16, CONFIG, world_size=3)


def test_the_pipeline_choice(tmp_path: Path) -> None:
    from halo_bench.data import load_registry

    registry = load_registry()
    digits = registry.suite("digits").data_config
    embedded = load_split(registry.dataset("digits"), "train", digits)
    assert choose_pipeline("auto", embedded, digits, (), CPU) is None  # a CPU keeps the DataLoader
    assert choose_pipeline("loader", embedded, digits, (), torch.device("meta")) is None
    array = choose_pipeline("device", embedded, digits, (), CPU)
    assert array is not None and array.normalised and len(array) == len(embedded)
    with pytest.raises(HaloBenchError, match="already normalised floats"):
        choose_pipeline("device", embedded, digits, ("hflip",), CPU)
    from PIL import Image

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (12, 12)).save(folder / "x.png")
    from halo_bench.data.images import ImageFiles

    files = ImageFiles([folder / "x.png"], [0], None)
    with pytest.raises(HaloBenchError, match="--data-pipeline device cannot serve this data: ImageFiles"):
        choose_pipeline("device", files, CONFIG, (), CPU)
    assert image_array(files, CONFIG)[0] is None


def test_in_memory_torchvision_sets_are_the_ones_the_device_pipeline_reads_as_arrays() -> None:
    """default_workers' list of in-memory classes and _tv_array's cannot drift apart."""
    import torchvision.datasets as tv

    from halo_bench.data.base import IN_MEMORY_TORCHVISION
    from halo_bench.data.device import _tv_array
    from halo_bench.data.sources import TORCHVISION_CLASSES

    arrays = set()
    for name in TORCHVISION_CLASSES:
        dataset = object.__new__(getattr(tv, name))  # no files: only the attributes _tv_array reads
        dataset.target_transform = None
        dataset.data = np.zeros((2, 4, 4, 3), dtype=np.uint8)
        dataset.targets = dataset.labels = [0, 1]
        if _tv_array(dataset) is not None:
            arrays.add(name)
    assert arrays == set(IN_MEMORY_TORCHVISION) and {"CIFAR10", "SVHN", "MNIST"} <= arrays


def test_in_memory_data_gets_no_workers_and_files_get_the_cpus_this_process_may_use(monkeypatch,
                                                                                    registry) -> None:
    import os

    from halo_bench.core.cpus import usable_cpus
    from halo_bench.data import default_workers
    from halo_bench.data.registry import DatasetSpec

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert usable_cpus() == 6  # the affinity mask, not the machine
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert usable_cpus() == 3  # SLURM's allocation, where task affinity is off
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert usable_cpus() == 6
    files = DatasetSpec(name="imgs", source="folder", params={"dir": "imgs"})
    assert default_workers(files, None) == 6 and default_workers(files, 2) == 2
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS: no affinity call
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert usable_cpus() == 64 and default_workers(files, None) == 8
    for name in ("cifar10", "cifar100", "svhn", "mnist", "digits"):
        assert default_workers(registry.dataset(name), None) == 0, name
        assert default_workers(registry.dataset(name), 4) == 4
    assert default_workers(registry.dataset("dtd"), None) == 8  # torchvision, but image files


def test_auto_evaluation_on_the_cpu_serves_arrays_with_the_dataloaders_outputs(tmp_path: Path, monkeypatch) -> None:
    """eval and ODIN (eval_batches) under `auto` skip PIL on the CPU, and the model sees the same bits."""
    import torchvision.datasets.cifar as tv_cifar
    from torch.utils.data import DataLoader, Subset

    from halo_bench.data import load_registry
    from halo_bench.data.device import eval_batches
    from halo_bench.data.synthetic import write_cifar_archive
    from halo_bench.features.passes import forward_pass
    from halo_bench.models.classifier import build_model

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # random stand-in bytes
    write_cifar_archive(tmp_path / "cifar10", "cifar10", n_train=20, n_test=30)
    registry = load_registry()
    digits, cifar = registry.suite("digits").data_config, registry.suite("cifar10").data_config
    cases = [(load_split(registry.dataset("digits"), "test", digits), digits, 1, 6)]
    cifar_test = load_split(registry.dataset("cifar10"), "test", cifar, LoadOptions(tmp_path))
    cases += [(cifar_test, cifar, 3, 10), (Subset(cifar_test, range(17)), cifar, 3, 10)]  # and eval --limit 17
    for dataset, config, chans, k in cases:
        assert isinstance(eval_batches(dataset, CPU, 8, 0, config, "auto"), DeviceBatches)
        assert isinstance(eval_batches(dataset, CPU, 8, 0, config, "loader"), DataLoader)
        model = build_model("test_resnet", "cce", num_classes=k, in_chans=chans, seed=0).eval()
        auto, loader = (forward_pass(model, dataset, CPU, 8, data_config=config, pipeline=p, show_progress=False)
                        for p in ("auto", "loader"))
        for a, b in zip((auto.logits, auto.features, auto.penultimate, auto.labels),
                        (loader.logits, loader.features, loader.penultimate, loader.labels), strict=True):
            assert torch.equal(a, b)
    # Training under auto keeps the DataLoader on the CPU: its random draws, and so its results, stay.
    assert choose_pipeline("auto", cifar_test, cifar, (), CPU) is None
