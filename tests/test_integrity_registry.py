"""Issue 18, items 6, 7 and 10: seeds that alias, bounds that overflow, and a registry that
must not mix entries up, reach outside the data root or quote the files it reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from clirun import cli_fails

from halo_bench.bench import BenchConfig, check_bench
from halo_bench.config import TrainConfig
from halo_bench.data import DatasetMissing, LoadOptions, load_registry, load_split
from halo_bench.errors import HaloBenchError
from halo_bench.registry import DEFAULT_REGISTRY

TINY = "test_resnet"


def _write(tmp_path: Path, doc: dict | str) -> Path:
    path = tmp_path / "datasets.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _mutate(change) -> dict:
    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    change(doc)
    return doc


# --------------------------------------------------------------------------- 6. seeds


def test_torch_seeds_alias_beyond_32_bits() -> None:
    # Why the bound: torch's CPU generator keeps a seed's low 32 bits.
    first = torch.randn(4, generator=torch.Generator().manual_seed(2**32))
    assert torch.equal(first, torch.randn(4, generator=torch.Generator().manual_seed(0)))
    TrainConfig(model=TINY, seed=2**32 - 1).check()  # the largest seed is fine


@pytest.mark.parametrize("args,message", [
    (["train", TINY, "--seed", 2**32], "--seed must be >= 0 and <= 4294967295"),
    (["bench", "--model", TINY, "--seeds", "0,4294967296", "--losses", "cce"],
     "--seeds must be >= 0 and <= 4294967295"),
])
def test_seeds_beyond_32_bits_are_refused(tmp_path: Path, args: list, message: str) -> None:
    cli_fails(*args, "--epochs", 1, "--out", tmp_path, match=message)
    assert not any(tmp_path.iterdir())  # refused before anything trained


@pytest.mark.parametrize("seeds,message", [
    ([0, 2**32], "--seeds must be >= 0 and <= 4294967295"),  # not "--seed": bench's flag is --seeds
    ([3, 3], "--seeds lists seed(s) 3 twice"),
    ([], "--seeds names no seed"),
])
def test_bench_config_checks_its_seeds(seeds: list[int], message: str) -> None:
    with pytest.raises(HaloBenchError, match=re.escape(message)):
        check_bench(BenchConfig(model=TINY, seeds=seeds, losses=["cce"]))


def test_derived_seeds_do_not_alias() -> None:
    from halo_bench.data.device import derived_seed

    # SeedSequence zero-pads: (seed, epoch) was (seed, epoch, 0), DDP rank 0's stream.
    assert derived_seed(3, 1) != derived_seed(3, 1, 0)
    assert derived_seed(0, 1) != derived_seed(0, 1, 0)
    assert len({derived_seed(s, e) for s in range(4) for e in range(4)}) == 16
    with pytest.raises(ValueError, match="2\\*\\*32"):  # 2**32 splits into the words (0, 1)
        derived_seed(2**32, 5)


# --------------------------------------------------------------------------- 7. bounds


@pytest.mark.parametrize("flag,value,message", [
    ("--lr", "1e40", "--lr must be positive and at most 10"),
    ("--weight-decay", "1e40", "--weight-decay must lie in [0, 1]"),
])
def test_overflowing_recipe_flags_are_one_line_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    # Both once overflowed float32 in SGD's first step: a RuntimeError traceback.
    cli_fails("train", TINY, "--epochs", 1, flag, value, "--out", tmp_path, match=message)


def test_lr_bounds_include_the_backbone_lr() -> None:
    TrainConfig(model=TINY, lr=10.0, weight_decay=1.0).check()  # the bounds themselves are fine
    with pytest.raises(HaloBenchError, match="--lr must be positive and at most 10"):
        TrainConfig(model=TINY, lr=10.5).check()
    with pytest.raises(HaloBenchError, match="--backbone-lr-scale x --lr, the backbone's learning rate, must be"):
        TrainConfig(model=TINY, init_from="w.pt", lr=0.1, backbone_lr_scale=1e40).check()


@pytest.mark.parametrize("key,value,message", [
    ("lr", 1e308, "recipe.lr: expected a positive number at most 10, got 1e+308"),
    ("lr", float("inf"), "recipe.lr: expected a positive number at most 10, got inf"),
    ("weight_decay", 1e308, "recipe.weight_decay: expected a number in [0, 1]"),
    ("grad_clip", float("inf"), "recipe.grad_clip: expected a positive number or null, got inf"),
])
def test_registry_recipe_values_are_bounded(tmp_path: Path, key: str, value: float, message: str) -> None:
    path = _write(tmp_path, _mutate(lambda d: d["suites"]["digits"]["recipe"].update({key: value})))
    with pytest.raises(HaloBenchError, match=re.escape(message)):
        load_registry(path)


def test_embedded_count_is_bounded_when_the_registry_is_read(tmp_path: Path) -> None:
    from halo_bench.data import embedded as E

    path = _write(tmp_path, _mutate(lambda d: d["datasets"]["uniform-noise"]["params"].update(count=10**12)))
    # Once a MemoryError (many GiB) when the set was generated; now a line at load time.
    cli_fails("datasets", "--registry", path,
              match="datasets.uniform-noise.splits.test: count must be at most 100000")
    with pytest.raises(E.EmbeddedDataError, match="count must be at most 100000"):
        E.uniform_noise(count=E.MAX_COUNT + 1)
    assert len(E.uniform_noise(count=E.MAX_COUNT)[0]) == E.MAX_COUNT
    bad_seed = _write(tmp_path, _mutate(lambda d: d["datasets"]["uniform-noise"]["params"].update(seed=2**32)))
    with pytest.raises(HaloBenchError, match=re.escape("uniform-noise.splits.test: seed must be an integer in")):
        load_registry(bad_seed)
