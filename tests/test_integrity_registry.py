"""Issue 18, items 6, 7 and 10: seeds that alias, bounds that overflow, and a registry that
must not mix entries up, reach outside the data root or quote the files it reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from clirun import cli_fails

from halo_bench.bench.sweep import BenchConfig, check_bench
from halo_bench.core.errors import HaloBenchError
from halo_bench.data import DatasetMissing, LoadOptions, load_registry, load_split
from halo_bench.data.registry import DEFAULT_REGISTRY
from halo_bench.train.config import TrainConfig

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


# --------------------------------------------------------------------------- 10. registry


def _line_of(text: str, fragment: str) -> int:
    assert text.count(fragment) == 1, fragment
    return text.count("\n", 0, text.index(fragment)) + 1


@pytest.mark.parametrize("old,extra,key,added,original", [
    # The case: a second `noise:` made "noise" evaluate sk-faces.
    ("      noise: uniform-noise\n", "      noise: sk-faces\n", "noise", "noise: sk-faces", "noise: uniform-noise"),
    ("datasets:\n", "  digits-6to9:\n    source: embedded\n    generator: uniform_noise\n"
     "    params: {count: 5}\n    splits: {test: {}}\n", "digits-6to9",
     "  digits-6to9:\n    source: embedded\n    generator: uniform_noise",
     "  digits-6to9:\n    source: embedded\n    description"),
    ("suites:\n", "  digits:\n    id: digits\n", "digits", "  digits:\n    id: digits\n  digits:",
     "  digits:\n    description: embedded default suite"),
    ("count: 300, seed: 3", ", count: 7", "count", ", count: 7", "{count: 300, seed: 3"),  # flow mapping
])
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path, old: str, extra: str, key: str,
                                                      added: str, original: str) -> None:
    text = DEFAULT_REGISTRY.read_text()
    assert text.count(old) == 1
    text = text.replace(old, old + extra)
    lines = sorted([_line_of(text, added), _line_of(text, original)])
    message = f"key '{key}' appears twice in one mapping, at lines {lines[0]} and {lines[1]}"
    with pytest.raises(HaloBenchError, match=re.escape(message)):
        load_registry(_write(tmp_path, text))


def test_merge_keys_may_still_override() -> None:
    from halo_bench.data.registry import _UniqueKeyLoader

    doc = yaml.load("base: &b {count: 1, seed: 2}\nother:\n  <<: *b\n  count: 5\n", Loader=_UniqueKeyLoader)
    assert doc["other"] == {"count": 5, "seed": 2}


@pytest.mark.parametrize("change,message", [
    (lambda d: d["datasets"]["digits"].update(classes=["0", "1", "2", "3", "4", "4"]),
     "digits.classes: class name(s) '4' appear more than once"),
    (lambda d: d["datasets"]["digits"].update(classes=[0, "0", 1]), "class name(s) '0' appear more than once"),
    (lambda d: d["suites"]["digits"]["far"].update(noise2="uniform-noise"),
     "suites.digits: dataset 'uniform-noise' is listed twice, as 'noise' and 'noise2'"),
    (lambda d: d["suites"]["digits"]["near"].update(again="sk-faces"), "dataset 'sk-faces' is listed twice"),
    (lambda d: d["suites"]["digits"]["far"].update(near="svhn"), "display name 'near' is a group name"),
    (lambda d: d["suites"]["digits"].update(ood_val={"faces": "sk-heldout"}),
     "ood_val.faces: 'faces' names 'sk-faces' among the OOD test sets"),
    (lambda d: d["suites"]["digits"].update(ood_val={"a": "sk-heldout", "b": "sk-heldout"}),
     "suites.digits.ood_val: dataset 'sk-heldout' is listed twice"),
])
def test_names_that_would_collide_are_refused(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(HaloBenchError, match=re.escape(message)):
        load_registry(_write(tmp_path, _mutate(change)))


@pytest.mark.parametrize("change,message", [
    (lambda d: d["datasets"]["openood-cifar10-tin"]["params"].update(list="../../../../../etc/passwd"),
     "datasets.openood-cifar10-tin.params.list: '../../../../../etc/passwd' leads out of the data root"),
    (lambda d: d["datasets"]["openood-cifar10-tin"]["splits"]["val"].update(list="lists/../../val.txt"),
     "openood-cifar10-tin.splits.val.list: 'lists/../../val.txt' leads out"),
    (lambda d: d["datasets"]["openood-cifar10-tin"]["params"].update(images=".."), "params.images: '..' leads out"),
    (lambda d: d["datasets"]["lsun-crop"]["params"].update(dir="../LSUN"), "lsun-crop.params.dir: '../LSUN' leads"),
    (lambda d: d["datasets"]["svhn"]["params"].update(dir="../../svhn"), "svhn.params.dir: '../../svhn' leads"),
    (lambda d: d["datasets"]["svhn"]["params"].update(dir=5), "svhn.params.dir: expected a path"),
])
def test_relative_paths_stay_under_the_data_root(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(HaloBenchError, match=re.escape(message)):
        load_registry(_write(tmp_path, _mutate(change)))


def test_paths_inside_the_root_and_absolute_paths_are_accepted(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["datasets"]["lsun-crop"]["params"]["dir"] = "elsewhere/../LSUN"
        d["datasets"]["isun"]["params"]["dir"] = str(tmp_path / "iSUN")

    registry = load_registry(_write(tmp_path, _mutate(change)))
    assert registry.dataset("isun").params["dir"] == str(tmp_path / "iSUN")


def _list_entry(tmp_path: Path, list_file: Path) -> object:
    from dataclasses import replace

    spec = load_registry().dataset("openood-cifar10-tin")
    (tmp_path / "images").mkdir()
    return replace(spec, params={"images": str(tmp_path / "images"), "list": str(list_file)})


def test_image_list_errors_never_quote_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"  # e.g. a registry's `list: /etc/passwd`: absolute, so allowed
    secret.write_text("# header\nroot:x:0:0:TOPSECRET:/root:/bin/bash\n")
    spec = _list_entry(tmp_path, secret)
    cfg = load_registry().suite("cifar10").data_config
    with pytest.raises(DatasetMissing) as err:
        load_split(spec, "test", cfg, LoadOptions(tmp_path))
    assert "TOPSECRET" not in str(err.value) and "root:x" not in str(err.value)
    assert f"line 2 of {secret} names an image that is not in" in str(err.value)
    secret.write_bytes(b"\xff\xfeTOPSECRET\x80\n")
    with pytest.raises(HaloBenchError, match="is not a UTF-8 text file of image paths") as err:
        load_split(spec, "test", cfg, LoadOptions(tmp_path))
    assert "TOPSECRET" not in str(err.value)
