"""datasets.yaml: the packaged registry, name resolution and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from halo_bench.core.errors import HaloBenchError
from halo_bench.data import load_registry
from halo_bench.data.registry import DEFAULT_REGISTRY


def test_packaged_registry_defines_the_digits_suite(registry) -> None:
    suite = registry.suite("digits")
    assert suite.id == "digits"
    assert list(suite.near) == ["digits-6to9"]
    assert list(suite.far) == ["textures", "photos", "faces", "noise"]
    assert registry.dataset("digits").classes == ("0", "1", "2", "3", "4", "5")
    assert len(registry.sha256) == 64


def test_resolve_ood_by_display_name_dataset_name_and_group(registry) -> None:
    suite = registry.suite("digits")
    assert registry.resolve_ood(suite, ["textures"]) == {"textures": ("far", "sk-textures")}
    assert registry.resolve_ood(suite, ["sk-faces"]) == {"faces": ("far", "sk-faces")}
    assert set(registry.resolve_ood(suite, ["far"])) == {"textures", "photos", "faces", "noise"}
    assert set(registry.resolve_ood(suite, ["near", "noise"])) == {"digits-6to9", "noise"}
    assert len(registry.resolve_ood(suite, None)) == 5


def test_unknown_names_suggest_close_matches(registry) -> None:
    with pytest.raises(HaloBenchError, match="unknown suite 'digit'.*Did you mean 'digits'"):
        registry.suite("digit")
    with pytest.raises(HaloBenchError, match="Did you mean 'textures'"):
        registry.resolve_ood(registry.suite("digits"), ["txtures"])
    with pytest.raises(HaloBenchError, match="unknown dataset"):
        registry.dataset("cifar11")


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "datasets.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _base() -> dict:
    return yaml.safe_load(DEFAULT_REGISTRY.read_text())


def _mutate(change) -> dict:
    doc = _base()
    change(doc)
    return doc


@pytest.mark.parametrize(
    "doc,message",
    [
        ("datasets: [unclosed", "not valid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
        (_mutate(lambda d: d.update(version=7)), "unsupported registry version 7"),
        (_mutate(lambda d: d.pop("suites")), "missing required key\\(s\\) suites"),
        (_mutate(lambda d: d["datasets"]["digits"].update(sorce="embedded")), "datasets.digits: unknown key\\(s\\) sorce"),
        (_mutate(lambda d: d["datasets"]["digits"].update(source="ftp")), "datasets.digits: unknown source 'ftp'"),
        (_mutate(lambda d: d["datasets"]["sk-faces"].update(generator="lfw_face")), "Did you mean 'lfw_faces'"),
        (_mutate(lambda d: d["datasets"]["digits"].update(splits={})), "needs at least one split"),
        (_mutate(lambda d: d["datasets"]["digits"].update(classes="0-5")), "classes: expected a list"),
        (_mutate(lambda d: d["suites"]["digits"].update(id="digitz")), "suites.digits.id: unknown dataset 'digitz'"),
        (_mutate(lambda d: d["suites"]["digits"]["far"].update(noise="noize")), "suites.digits.far.noise: unknown dataset 'noize'"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(mean=[0.1, 0.2])), "data_config.mean: expected 1 number"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(std=[0.0])), "every std must be positive"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(input_size=[8, 8])), "input_size: expected"),
        (_mutate(lambda d: d["suites"]["digits"]["recipe"].update(lr=-1)), "recipe.lr: expected a positive number"),
        (_mutate(lambda d: d["suites"]["digits"]["recipe"].update(epochs="ten")), "recipe.epochs: expected a positive integer"),
        (_mutate(lambda d: d["suites"]["digits"]["recipe"].pop("batch_size")), "missing required key\\(s\\) batch_size"),
        (_mutate(lambda d: d["suites"]["digits"]["near"].update(textures="sk-textures")), "both near and far"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(crop_pct=0)), "crop_pct: expected a number"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(crop_pct="abc")), "crop_pct: expected"),
        (_mutate(lambda d: d["suites"]["digits"]["data_config"].update(interpolation="lanczos9")), "interpolation"),
        (_mutate(lambda d: d["datasets"]["svhn"].update(download="get it from {url}")), "svhn.download: only"),
        (_mutate(lambda d: d["datasets"]["digits"].update(source=["embedded"])), "digits.source: expected a string"),
        (_mutate(lambda d: d["suites"]["digits"]["far"].update(noise=["uniform-noise"])), "far.noise: expected a"),
        (_mutate(lambda d: d["suites"]["digits"]["far"].update(digits="uniform-noise")), "cannot be an OOD set"),
        (_mutate(lambda d: d["suites"]["digits"]["far"].update(again="digits")), "cannot be an OOD set"),
        (_mutate(lambda d: d["datasets"]["lsun-crop"].update(aliases=["textures"])), "already names dataset 'dtd'"),
    ],
)
def test_malformed_registry_names_the_problem(tmp_path: Path, doc, message: str) -> None:
    with pytest.raises(HaloBenchError, match=message):
        load_registry(_write(tmp_path, doc))


def test_registry_is_read_with_safe_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(HaloBenchError, match="not valid YAML"):
        load_registry(path)


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(HaloBenchError, match="does not exist"):
        load_registry(tmp_path / "nope.yaml")


def test_environment_variable_selects_the_registry(tmp_path: Path, monkeypatch) -> None:
    doc = _base()
    doc["suites"]["tiny"] = dict(doc["suites"]["digits"], description="a copy")
    monkeypatch.setenv("HALO_BENCH_DATASETS", str(_write(tmp_path, doc)))
    assert "tiny" in load_registry().suites
