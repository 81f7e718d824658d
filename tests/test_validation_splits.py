"""Validation data: digits' val split is carved out of train (test unchanged), deterministic and
disjoint from every other split; OOD-val sets are checked by the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import embedded as E
from halo_bench.data import load_registry
from halo_bench.data.registry import DEFAULT_REGISTRY

ID = [0, 1, 2, 3, 4, 5]


def _rows(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


def test_digits_val_is_carved_from_train_and_test_is_unchanged() -> None:
    parts = {s: E.sklearn_digits(ID, s, seed=0, val_fraction=0.1) for s in ("train", "val", "test")}
    train, val, test = (_rows(parts[s][0]) for s in ("train", "val", "test"))
    all_rows = _rows(E.sklearn_digits(ID, "all")[0])
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    assert train | val | test == all_rows
    assert abs(len(val) - 0.1 * len(all_rows)) <= 1
    np.testing.assert_array_equal(parts["test"][0], E.sklearn_digits(ID, "test", seed=0)[0])  # as before
    old_train = _rows(E.sklearn_digits(ID, "train", seed=0)[0])
    assert train | val == old_train
    assert set(np.unique(parts["val"][1]).tolist()) == set(ID)  # stratified: every class
    again = E.sklearn_digits(ID, "val", seed=0, val_fraction=0.1)
    np.testing.assert_array_equal(again[0], parts["val"][0])


@pytest.mark.parametrize("kwargs, match", [({"split": "val"}, "val_fraction > 0"),
                                           ({"split": "train", "val_fraction": 0.7}, "val_fraction"),
                                           ({"split": "train", "val_fraction": -0.1}, "val_fraction")])
def test_digits_val_arguments(kwargs, match) -> None:
    with pytest.raises(HaloBenchError, match=match):
        E.sklearn_digits(ID, **kwargs)


def test_registry_digits_validation_sets_never_overlap_test_sets(registry) -> None:
    from halo_bench.data import load_split

    suite = registry.suite("digits")
    cfg = suite.data_config
    assert suite.ood_val == {"heldout": "sk-heldout"}
    heldout = _rows(load_split(registry.dataset("sk-heldout"), "val", cfg).tensors[0].numpy())
    for _, key in suite.ood_sets().values():
        assert heldout.isdisjoint(_rows(load_split(registry.dataset(key), "test", cfg).tensors[0].numpy()))
    val = _rows(load_split(registry.dataset("digits"), "val", cfg).tensors[0].numpy())
    for split in ("train", "test"):
        assert val.isdisjoint(_rows(load_split(registry.dataset("digits"), split, cfg).tensors[0].numpy()))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["suites"]["digits"].__setitem__("ood_val", {"x": "nope"}), "unknown dataset"),
    (lambda d: d["suites"]["digits"].__setitem__("ood_val", {"x": "uniform-noise"}), "'val' split"),
    (lambda d: d["datasets"]["digits"]["splits"].pop("val"), "'val' split of the ID dataset"),
])
def test_registry_checks_validation_sets(tmp_path: Path, edit, match) -> None:
    data = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    edit(data)
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(HaloBenchError, match=match):
        load_registry(path)
