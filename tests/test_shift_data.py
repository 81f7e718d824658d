"""The shifted ID sets as registry datasets: CIFAR-10-C's .npy layout from tiny files written in the
exact format, ImageNet-C's folders, the generated `corrupted` source (lazy, stored under the data
root for on-disk ID sets), the suites' `shift:` entries, selection, and the verified download
(through a file:// URL: no network)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import runner

from halo_bench.cli import app
from halo_bench.core.errors import HaloBenchError
from halo_bench.data import (
    DatasetMissing,
    LoadOptions,
    how_to_get,
    load_split,
    presence,
)
from halo_bench.data import corruptions as C
from halo_bench.data import shift as S
from halo_bench.data.registry import read_registry
from halo_bench.data.synthetic import write_cifar_archive

CIFAR_CONFIG = {"input_size": (3, 32, 32), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
                "interpolation": "bilinear", "crop_pct": 1.0}


def _pixels(x: torch.Tensor, config: dict) -> np.ndarray:
    """Model inputs back to uint8 N x H x W x C (the inverse of ToTensor + Normalize)."""
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    return torch.round((x * std + mean) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_cifar_c(folder: Path, names: tuple[str, ...] = ("gaussian_noise", "contrast"), per_block: int = 4,
                  classes: int = 10) -> dict[str, np.ndarray]:
    """`<name>.npy` (5 x per_block, 32, 32, 3) uint8, severity s in rows [(s-1) per_block, s per_block),
    and labels.npy: the test labels tiled 5 times, as the published release."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    test_labels = rng.integers(0, classes, per_block)
    written = {}
    for i, name in enumerate(names):
        images = rng.integers(0, 256, size=(5 * per_block, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.repeat(np.arange(1, 6), per_block) + 10 * i  # the severity, readable back
        np.save(folder / f"{name}.npy", images)
        written[name] = images
    np.save(folder / "labels.npy", np.tile(test_labels, 5).astype(np.uint8))
    written["labels"] = np.tile(test_labels, 5)
    return written


def test_cifar_c_npy_layout_severity_blocks_and_labels(registry, tmp_path: Path) -> None:
    written = write_cifar_c(tmp_path / "CIFAR-10-C")
    family = registry.dataset("cifar10-c")
    assert presence(family, tmp_path).status == "present"
    id_spec = registry.dataset("cifar10")
    assert S.available_corruptions(family, id_spec, CIFAR_CONFIG, tmp_path) == ("gaussian_noise", "contrast")
    for name in ("gaussian_noise", "contrast"):
        for severity in (1, 3, 5):
            spec = S.shifted_spec(family, id_spec, name, severity)
            dataset = load_split(spec, "test", CIFAR_CONFIG, LoadOptions(tmp_path))
            assert len(dataset) == 4
            x, y = dataset.tensors
            rows = slice(4 * (severity - 1), 4 * severity)
            np.testing.assert_array_equal(_pixels(x, CIFAR_CONFIG), written[name][rows])
            np.testing.assert_array_equal(y.numpy(), written["labels"][rows])
            assert y.dtype == torch.int64


def test_cifar_c_refuses_malformed_and_names_missing_files(registry, tmp_path: Path) -> None:
    folder = tmp_path / "CIFAR-10-C"
    write_cifar_c(folder)
    family, id_spec = registry.dataset("cifar10-c"), registry.dataset("cifar10")
    with pytest.raises(DatasetMissing, match="fog.npy"):
        load_split(S.shifted_spec(family, id_spec, "fog", 1), "test", CIFAR_CONFIG, LoadOptions(tmp_path))
    np.save(folder / "contrast.npy", np.zeros((7, 32, 32, 3), np.uint8))  # not 5 blocks
    with pytest.raises(HaloBenchError, match="multiple of 5"):
        load_split(S.shifted_spec(family, id_spec, "contrast", 1), "test", CIFAR_CONFIG, LoadOptions(tmp_path))
    np.save(folder / "labels.npy", np.zeros(19, np.uint8))  # one label short of gaussian_noise's 20 rows
    with pytest.raises(HaloBenchError, match="20 integer labels"):
        load_split(S.shifted_spec(family, id_spec, "gaussian_noise", 1), "test", CIFAR_CONFIG, LoadOptions(tmp_path))
    assert "56bf5dcef84df0e2308c6dcbcbbd8499" in how_to_get(family, tmp_path / "elsewhere")
    assert "CIFAR-10-C.tar" in how_to_get(family, tmp_path / "elsewhere")


def test_imagenet_c_folders_label_wnids_in_sorted_order(tmp_path: Path) -> None:
    from PIL import Image

    from halo_bench.data.registry import DatasetSpec

    rng = np.random.default_rng(0)
    for i, wnid in enumerate(["n02", "n01", "n03"]):
        folder = tmp_path / "ImageNet-C" / "fog" / "2" / wnid
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    family = DatasetSpec("imagenet-c", "imagenet-c", params={"dir": "ImageNet-C"}, splits={"test": {}},
                         classes=("0", "1", "2"))
    config = {**CIFAR_CONFIG, "crop_pct": 0.875}
    dataset = load_split(S.shifted_spec(family, family, "fog", 2), "test", config, LoadOptions(tmp_path))
    assert sorted(int(dataset[i][1]) for i in range(3)) == [0, 1, 2]
    assert [p.parent.name for p in dataset.paths] == ["n01", "n02", "n03"]
    assert dataset[0][0].shape == (3, 32, 32)
    assert S.available_corruptions(family, family, config, tmp_path) == ("fog",)
    narrow = DatasetSpec("imagenet-c", "imagenet-c", params={"dir": "ImageNet-C"}, splits={"test": {}},
                         classes=("0", "1", "2", "3"))
    with pytest.raises(HaloBenchError, match="3 class folders"):
        load_split(S.shifted_spec(narrow, narrow, "fog", 2), "test", config, LoadOptions(tmp_path))


def test_generated_digits_are_lazy_and_the_corruption_of_the_test_split(registry, monkeypatch) -> None:
    from halo_bench.data.sources import embedded_split, to_model_input

    suite = registry.suite("digits")
    family, id_spec = registry.dataset("cifar-c-style"), registry.dataset("digits")
    calls = []
    original = C.corrupt
    monkeypatch.setattr(C, "corrupt", lambda *a, **k: calls.append(a[1:]) or original(*a, **k))
    spec = S.shifted_spec(family, id_spec, "impulse_noise", 4)
    dataset = load_split(spec, "test", suite.data_config, LoadOptions(Path("unused")))
    levels, labels = embedded_split(id_spec, "test")
    assert len(dataset) == len(labels) and calls == []  # the length alone makes no image
    x, y = dataset.tensors
    assert calls == [("impulse_noise", 4, 0)]
    expected = original(levels[..., None] / 16.0, "impulse_noise", 4, 0)
    torch.testing.assert_close(x, to_model_input(expected[..., 0], suite.data_config, max_level=255.0))
    np.testing.assert_array_equal(y.numpy(), labels)
    assert spec.params["of"]["name"] == "digits" and spec.params["seed"] == 0  # in the feature cache's key
    assert S.available_corruptions(family, id_spec, suite.data_config, Path("unused")) == tuple(
        c for c in C.CORRUPTIONS if c != "saturate")  # grey images: saturation is the identity


def test_generated_cifar_is_stored_under_the_data_root_and_checked(registry, tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # tiny stand-in archive
    write_cifar_archive(tmp_path / "cifar10", "cifar10", n_train=10, n_test=12)
    family, id_spec = registry.dataset("cifar-c-style"), registry.dataset("cifar10")
    spec = S.shifted_spec(family, id_spec, "motion_blur", 2)
    options = LoadOptions(tmp_path)
    first = load_split(spec, "test", CIFAR_CONFIG, options).tensors[0]
    raw = load_split(id_spec, "test", CIFAR_CONFIG, options).data
    np.testing.assert_array_equal(_pixels(first, CIFAR_CONFIG), C.corrupt(raw, "motion_blur", 2, 0))
    (stored,) = (tmp_path / "halo-bench-generated").glob("*.npy")
    monkeypatch.setattr(C, "corrupt", lambda *a, **k: pytest.fail("made again although stored"))
    from halo_bench.data import shifted

    shifted._RAW_CACHE.clear()
    torch.testing.assert_close(load_split(spec, "test", CIFAR_CONFIG, options).tensors[0], first)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # a flipped byte: the record's hash no longer matches, the file is not used
    stored.write_bytes(bytes(data))
    with pytest.raises(pytest.fail.Exception, match="made again"):
        _ = load_split(spec, "test", CIFAR_CONFIG, options).tensors


def test_suites_choose_published_files_else_generated(registry, tmp_path: Path) -> None:
    suite = registry.suite("cifar10")
    assert suite.shift == ("cifar10-c", "cifar-c-style")
    assert S.choose_shift_set(registry, suite, tmp_path).name == "cifar-c-style"
    write_cifar_c(tmp_path / "CIFAR-10-C")
    assert S.choose_shift_set(registry, suite, tmp_path).name == "cifar10-c"
    assert registry.suite("digits").shift == ("cifar-c-style",)
    assert registry.suite("imagenet").shift == ("imagenet-c",)
    with pytest.raises(DatasetMissing, match="ImageNet-C"):
        S.choose_shift_set(registry, registry.suite("imagenet"), tmp_path)


@pytest.mark.parametrize("edit,message", [
    ("shift: [nowhere]", "unknown dataset 'nowhere'"),
    ("shift: [uniform-noise]", "not a shift set"),
    ("shift: [cifar10-c]", "other classes than the ID dataset"),
    ("shift: [cifar-c-style, cifar-c-style]", "lists a dataset twice"),
])
def test_registry_refuses_bad_shift_entries(tmp_path: Path, edit: str, message: str) -> None:
    from halo_bench.data import SOURCES
    from halo_bench.data.registry import DEFAULT_REGISTRY

    text = DEFAULT_REGISTRY.read_text().replace("    shift: [cifar-c-style]  # eval --shift: generated from the "
                                                "digits test split", "    " + edit)
    path = tmp_path / "datasets.yaml"
    path.write_text(text)
    with pytest.raises(HaloBenchError, match=message):
        read_registry({name: source.validate for name, source in SOURCES.items()}, path)


def test_registry_refuses_bad_shift_datasets(tmp_path: Path) -> None:
    from halo_bench.data import SOURCES
    from halo_bench.data.registry import DEFAULT_REGISTRY

    checks = {name: source.validate for name, source in SOURCES.items()}
    base = DEFAULT_REGISTRY.read_text()
    for old, new, message in (("params: {release: CIFAR-10-C}", "params: {release: CIFAR-11-C}", "unknown release"),
                              ("params: {seed: 0}\n", "params: {seed: 0, corruption: fog}\n", "set by `eval --shift`"),
                              ("params: {seed: 0}\n", "params: {seed: -1}\n", "params.seed")):
        path = tmp_path / "datasets.yaml"
        path.write_text(base.replace(old, new, 1))
        with pytest.raises(HaloBenchError, match=message):
            read_registry(checks, path)


def test_selection_of_corruptions_and_severities() -> None:
    generated = tuple(c for c in C.CORRUPTIONS if c != "saturate")
    assert S.select_corruptions(["all"], generated, "x") == list(generated)
    assert S.select_corruptions(["noise"], generated, "x") == ["gaussian_noise", "shot_noise", "impulse_noise",
                                                                "speckle_noise"]
    assert S.select_corruptions(["contrast", "gaussian_noise"], generated, "x") == ["gaussian_noise", "contrast"]
    standard = S.select_corruptions(["standard"], S.PUBLISHED, "x")
    assert len(standard) == 15 and set(standard) == set(S.STANDARD)
    assert len(set(S.STANDARD) & set(generated)) == 11 and set(S.PUBLISHED) - set(C.CORRUPTIONS) == set(S.NEED_ASSETS)
    with pytest.raises(HaloBenchError, match="needs image assets"):
        S.select_corruptions(["fog"], generated, "x", generated=True)
    with pytest.raises(HaloBenchError, match="grey"):
        S.select_corruptions(["saturate"], generated, "x", generated=True)
    with pytest.raises(HaloBenchError, match="unknown corruption"):
        S.select_corruptions(["gausian_noise"], generated, "x")
    assert S.parse_severities(None) == [1, 2, 3, 4, 5] and S.parse_severities("5,1") == [1, 5]
    for bad in ("0", "6", "a", ""):
        with pytest.raises(HaloBenchError, match="severities"):
            S.parse_severities(bad)


def _tar(tmp_path: Path) -> tuple[Path, str]:
    write_cifar_c(tmp_path / "src" / "CIFAR-10-C")
    archive = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "CIFAR-10-C", arcname="CIFAR-10-C")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_the_md5_and_unpacks(tmp_path: Path, monkeypatch) -> None:
    """torchvision's download_and_extract_archive with only its network fetch faked (it serves a tiny
    tar for the release URL): the real checksum check and extraction run."""
    import shutil

    import torchvision.datasets.utils as tv_utils

    archive, md5 = _tar(tmp_path)
    release = S.CIFAR_C_RELEASES["CIFAR-10-C"]
    fetched = []

    def fake_fetch(url: str, filename: str, chunk_size: int = 0) -> None:
        fetched.append(url)
        shutil.copy(archive, filename)

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", fake_fetch)
    # the published MD5: the stand-in tar fails the check, nothing half-made is left, the manual route is printed
    bad = tmp_path / "bad"
    result = runner.invoke(app, ["download", "cifar10-c", "--data-root", str(bad)])
    assert result.exit_code == 1, result.output
    assert fetched == [release.url] and "download failed" in result.output
    assert release.md5 in result.output and release.url in result.output
    assert not (bad / "CIFAR-10-C").exists()
    # the stand-in's own MD5: verified, unpacked to CIFAR-10-C/, and readable
    monkeypatch.setitem(S.CIFAR_C_RELEASES, "CIFAR-10-C", S.Release(release.url, release.filename, md5, "CIFAR-10-C"))
    root = tmp_path / "data"
    result = runner.invoke(app, ["download", "cifar10-c", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "CIFAR-10-C").iterdir()) == ["contrast.npy", "gaussian_noise.npy",
                                                                      "labels.npy"]


def test_datasets_lists_the_shift_sets_and_how_to_get_them(tmp_path: Path) -> None:
    result = runner.invoke(app, ["datasets", "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("cifar-c-style", "cifar10-c", "cifar100-c", "imagenet-c", "11f0ed0f1191edbf9fa23466ae6021d3",
                 "e80562d7f6c3f8834afb1ecf27252745"):
        assert text in result.output
