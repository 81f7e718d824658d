"""The real-dataset sources on tiny files in the exact on-disk formats, and the CLI on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clirun import results_in
from ondisk import write_cifar10_suite, write_image_list
from typer.testing import CliRunner

from halo_bench.cli import app
from halo_bench.core.errors import HaloBenchError
from halo_bench.data import DatasetMissing, LoadOptions, load_split, presence

runner = CliRunner()


@pytest.fixture(autouse=True)
def skip_checksums(monkeypatch):
    """The files are tiny stand-ins, so their md5 differs: bypass only torchvision's checksum."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places365
    import torchvision.datasets.svhn as svhn

    for module in (cifar, svhn, places365):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar10_suite(root)
    return root


def _options(root: Path, augment: tuple[str, ...] = ()) -> LoadOptions:
    return LoadOptions(root, augment)


@pytest.mark.parametrize("name,size,labelled", [
    ("cifar100", 100, True), ("svhn", 30, True), ("mnist", 30, True), ("dtd", 18, True),
    ("places365", 12, True), ("lsun-crop", 15, False), ("openood-cifar10-tin", 14, False),
])
def test_every_source_loads_through_the_id_eval_transform(registry, data_root, name, size, labelled) -> None:
    cfg = registry.suite("cifar10").data_config
    ds = load_split(registry.dataset(name), "test", cfg, _options(data_root))
    assert len(ds) == size
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert (int(y) >= 0) == labelled
    assert presence(registry.dataset(name), data_root).status == "present"


def test_cifar10_train_split_and_augmentation(registry, data_root) -> None:
    suite = registry.suite("cifar10")
    options = _options(data_root, suite.train_augment)
    train = load_split(registry.dataset("cifar10"), "train", suite.data_config, options)
    assert len(train) == 100
    torch.manual_seed(0)
    a, _ = train[0]
    torch.manual_seed(1)
    b, _ = train[0]
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)  # random crop / flip differ
    test = load_split(registry.dataset("cifar10"), "test", suite.data_config, _options(data_root))
    assert torch.equal(test[0][0], test[0][0])


def test_svhn_labels_follow_torchvision(registry, data_root) -> None:
    ds = load_split(registry.dataset("svhn"), "test", registry.suite("cifar10").data_config, _options(data_root))
    assert [int(ds[i][1]) for i in range(10)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is digit 0


def test_any_ood_set_goes_through_any_id_transform(registry, data_root) -> None:
    digits_cfg = registry.suite("digits").data_config
    x, _ = load_split(registry.dataset("svhn"), "test", digits_cfg, _options(data_root))[0]
    assert x.shape == (1, 8, 8)


def test_missing_dataset_says_how_to_get_it(registry, tmp_path) -> None:
    cfg = registry.suite("cifar10").data_config
    with pytest.raises(DatasetMissing, match="halo-bench download cifar10 --data-root"):
        load_split(registry.dataset("cifar10"), "test", cfg, _options(tmp_path))
    with pytest.raises(DatasetMissing, match="LSUN.tar.gz"):
        load_split(registry.dataset("lsun"), "test", cfg, _options(tmp_path))
    with pytest.raises(DatasetMissing, match="scripts/download/download.py"):
        load_split(registry.dataset("openood-cifar10-tin"), "test", cfg, _options(tmp_path))
    assert presence(registry.dataset("cifar10"), tmp_path).status == "missing"


def test_image_list_errors_name_the_line(registry, tmp_path) -> None:
    cfg = registry.suite("cifar10").data_config
    spec = registry.dataset("openood-cifar10-tin")
    write_image_list(tmp_path, "openood/benchmark_imglist/cifar10/test_tin.txt", "tin/val/images", n=3)
    list_file = tmp_path / "openood/benchmark_imglist/cifar10/test_tin.txt"
    list_file.write_text(list_file.read_text() + "../../etc/passwd -1\n")
    with pytest.raises(HaloBenchError, match="test_tin.txt:4: image paths must be relative"):
        load_split(spec, "test", cfg, _options(tmp_path))
    list_file.write_text("tin/val/images/val_0.JPEG -1\ntin/val/images/gone.JPEG -1\n")
    with pytest.raises(DatasetMissing, match="line 2 of .*test_tin.txt names an image that is not in"):
        load_split(spec, "test", cfg, _options(tmp_path))


def test_cifar_suite_builds_the_cifar_resnet(registry, data_root, tmp_path) -> None:
    from halo_bench.models.checkpoint import read_checkpoint
    from halo_bench.train.loop import TrainConfig, train

    result = train(TrainConfig(model="resnet18", loss="halo", suite="cifar10", epochs=1, batch_size=50,
                               out=str(tmp_path), data_root=str(data_root)), registry)
    meta = read_checkpoint(result.checkpoint)["meta"]
    assert meta["model"]["name"] == "resnet18" and meta["model"]["arch"] == "resnet18_cifar"
    assert meta["data_root"] == str(data_root) and meta["train_augment"] == ["random_crop", "hflip"]
    assert meta["train_config"]["lr"] == 0.1 and meta["train_config"]["batch_size"] == 50
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["model"]["arch"] == "resnet18_cifar"


def test_cli_train_eval_report_on_the_cifar10_suite(data_root, tmp_path) -> None:
    root = ["--data-root", str(data_root)]
    for loss in ("cce", "halo"):
        result = runner.invoke(app, ["train", "test_resnet", "--suite", "cifar10", "--loss", loss, "--epochs", "1",
                                     "--batch-size", "50", "--out", str(tmp_path), *root])
        assert result.exit_code == 0, result.output
    ckpt = tmp_path / "cifar10-test_resnet-halo-s0" / "ckpt.pt"
    result = runner.invoke(app, ["eval", str(ckpt), *root])
    assert result.exit_code == 0, result.output
    results = json.loads((ckpt.parent / "results.json").read_text())
    assert results["datasets"]["cifar10"]["n"] == 40
    assert set(results["ood"]["energy"]["sets"]) == {"cifar100", "tin", "mnist", "svhn", "textures", "places365"}
    assert results["data_root"] == str(data_root)
    cce = tmp_path / "cifar10-test_resnet-cce-s0" / "ckpt.pt"
    result = runner.invoke(app, ["eval", str(cce), "--ood", "svhn,lsun"])  # data root: the run's
    assert result.exit_code == 0, result.output
    sets = results_in(cce.parent)["ood"]["msp"]["sets"]  # results-ood-lsun+svhn.json
    assert sets["svhn"]["group"] == "far" and sets["lsun"]["group"] == "far"
    report = runner.invoke(app, ["report", str(tmp_path)])
    assert report.exit_code == 0 and "cifar10 / test_resnet" in report.stdout


def test_cli_reports_a_missing_dataset_and_lists_presence(data_root, tmp_path) -> None:
    result = runner.invoke(app, ["train", "test_resnet", "--suite", "cifar10", "--data-root", str(tmp_path),
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "halo-bench download cifar10" in result.output
    assert "Traceback" not in result.output
    listing = runner.invoke(app, ["datasets", "--data-root", str(data_root)], env={"COLUMNS": "200"})  # a table
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if line.startswith("│ cifar10 "))
    assert "present" in row and "KB" in row
    assert "isun: Download https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz" in listing.output


def test_cli_download_uses_torchvision_and_explains_the_rest(monkeypatch, tmp_path) -> None:
    import torchvision.datasets

    calls = []

    class FakeMNIST:
        def __init__(self, root, download=False, **kwargs):
            calls.append((root, download, kwargs))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    result = runner.invoke(app, ["download", "mnist", "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [(str(tmp_path / "mnist"), True, {"train": False})]
    result = runner.invoke(app, ["download", "isun", "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and "iSUN.tar.gz" in result.output
    result = runner.invoke(app, ["download", "svnh", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "Did you mean 'svhn'" in result.output


def test_how_to_get_a_folder_without_instructions(registry, tmp_path) -> None:
    from dataclasses import replace

    from halo_bench.data import how_to_get

    spec = replace(registry.dataset("isun"), download="")
    assert how_to_get(spec, tmp_path) == f"Put its files at {tmp_path / 'iSUN'} (see {spec.homepage}); " \
        "halo-bench cannot download it."
