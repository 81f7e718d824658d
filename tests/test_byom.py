"""Bring your own timm model (issue #8): weights in through timm's loader, offline; head-only
training on cached features; a foreign classifier evaluated as it is. Every weight is written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from blocktorch import PRELUDE
from clirun import cli_fails as _fails
from clirun import cli_ok as _ok
from clirun import results_in
from safetensors.torch import save_file

from halo_bench.core.errors import HaloBenchError
from halo_bench.models.checkpoint import read_checkpoint

TINY = "test_resnet"
TAGGED = "test_resnet.r160_in1k"  # timm's tiny test model with a pretrained tag (hub: timm/test_resnet.r160_in1k)
FAST = ["--epochs", "1", "--device", "cpu"]
EVAL_FAST = ["--limit", "40", "--detectors", "msp,energy,mahalanobis", "--device", "cpu", "--ood", "near,noise"]


def _tiny(in_chans: int, num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(TINY, in_chans=in_chans, num_classes=num_classes)
    with torch.no_grad():  # distinctive BatchNorm statistics, so frozen ones are told apart from fresh ones
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny model's weights as a plain state_dict, a timm train.py checkpoint and safetensors."""
    root = tmp_path_factory.mktemp("weights")
    one = _tiny(1, 1000, 1).state_dict()  # a 1-channel backbone: loads unchanged into the digits suite
    three = _tiny(3, 6, 2).state_dict()  # 3 channels, 6 classes: timm adapts the conv, keeps nothing else out
    ema = _tiny(1, 1000, 3).state_dict()
    paths = {"plain": root / "plain.pth", "timm": root / "model_best.pth.tar", "safetensors": root / "w.safetensors",
             "rgb6": root / "rgb6.pth"}
    torch.save(one, paths["plain"])
    torch.save({"epoch": 7, "arch": TINY, "state_dict": {f"module.{k}": v for k, v in one.items()},
                "state_dict_ema": ema, "metric": 0.5}, paths["timm"])
    save_file({k: v.contiguous() for k, v in one.items()}, str(paths["safetensors"]))
    torch.save(three, paths["rgb6"])
    return paths


def _backbone(ckpt: Path) -> dict[str, torch.Tensor]:
    return {k[len("backbone."):]: v for k, v in read_checkpoint(ckpt)["model"].items() if k.startswith("backbone.")}


def _file_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))}


def _bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["plain", "timm", "safetensors"])
def test_init_from_each_format_freeze_backbone_is_bit_exact_and_evaluates(files, tmp_path, kind) -> None:
    out = tmp_path / "runs"
    path = _ok("train", TINY, "--init-from", files[kind], "--freeze-backbone", "--loss", "halo", *FAST,
               "--out", out).strip().splitlines()[-1]
    ckpt = Path(path)
    expected = _file_backbone(torch.load(files["plain"], weights_only=True))
    assert _bit_equal(_backbone(ckpt), expected)  # weights, and BatchNorm statistics, untouched
    config = json.loads((ckpt.parent / "config.json").read_text())
    weights = config["weights"]
    import hashlib

    assert weights["sha256"] == hashlib.sha256(files[kind].read_bytes()).hexdigest()
    assert weights["dropped"] == ["fc.bias", "fc.weight"] and weights["missing"] == []
    assert config["train_config"]["freeze_backbone"] and config["train_config"]["init_from"] == str(files[kind])
    if kind == "plain":  # evaluation reads the checkpoint alone: one format is enough
        _ok("eval", ckpt.parent, *EVAL_FAST)
        results = results_in(ckpt.parent)
        assert results["weights"]["sha256"] == weights["sha256"]


def test_use_ema_takes_the_ema_weights_and_full_finetuning_moves_the_backbone(files, tmp_path) -> None:
    ema = _ok("train", TINY, "--init-from", files["timm"], "--use-ema", "--freeze-backbone", "--loss", "cce",
              *FAST, "--out", tmp_path).strip().splitlines()[-1]
    state = torch.load(files["timm"], weights_only=True)
    assert _bit_equal(_backbone(Path(ema)), _file_backbone(state["state_dict_ema"]))
    full = _ok("train", TINY, "--init-from", files["timm"], "--loss", "cce", *FAST,
               "--out", tmp_path).strip().splitlines()[-1]
    moved = _backbone(Path(full))
    start = _file_backbone(state["state_dict"])
    assert set(moved) == set(start) and not torch.equal(moved["conv1.0.weight"], start["conv1.0.weight"])
    config = json.loads((Path(full).parent / "config.json").read_text())["train_config"]
    assert config["backbone_lr_scale"] == 0.1 and config["lr"] == pytest.approx(0.005)  # the fine-tuning recipe
    _fails("train", TINY, "--init-from", files["plain"], "--use-ema", *FAST, "--out", tmp_path,
           match="no EMA weights")


def test_input_conv_is_adapted_to_the_suites_channels_by_timm(files) -> None:
    from timm.models import adapt_input_conv

    from halo_bench.models.weights import backbone_from_file

    model, report, _ = backbone_from_file(TINY, files["rgb6"], in_chans=1)
    state = torch.load(files["rgb6"], weights_only=True)
    assert torch.equal(model.state_dict()["conv1.0.weight"], adapt_input_conv(1, state["conv1.0.weight"]))
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert "fc.weight" in report.dropped and any("3 to 1" in d for d in report.dropped)


def test_halo_bench_checkpoint_gives_backbone_and_same_loss_head(tmp_path) -> None:
    from halo_bench.models.checkpoint import save_checkpoint
    from halo_bench.models.classifier import build_model, model_meta

    trained = build_model(TINY, "cce", 6, 1, seed=11)
    ckpt = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(ckpt, trained, {"model": model_meta(trained, TINY, "cce", 1)})
    source = read_checkpoint(ckpt)["model"]
    same = build_model(TINY, "cce", 6, 1, init_from=str(ckpt))
    assert same.weights_report.kind == "halo-bench" and same.weights_report.head_loaded
    assert all(torch.equal(v, source[k]) for k, v in same.state_dict().items())
    other = build_model(TINY, "halo", 6, 1, init_from=str(ckpt))
    assert not other.weights_report.head_loaded
    assert torch.equal(other.embed.weight, source["embed.weight"])
    assert torch.equal(other.backbone.conv1[0].weight, source["backbone.conv1.0.weight"])


def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Evil()}}, bad)
    _fails("train", TINY, "--init-from", bad, *FAST, "--out", tmp_path, match="refused to load")
    with pytest.raises(HaloBenchError, match="pickled Python objects"):
        from halo_bench.models.weights import read_weights_file

        read_weights_file(bad)
    assert not marker.exists()


def _hub_layout(hf_home: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """The Hugging Face cache as huggingface_hub lays it out (refs/main -> snapshots/<rev>/...)."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_pretrained_from_the_hub_cache_offline_trains_and_evaluates(tmp_path, monkeypatch) -> None:
    state = _tiny(3, 1000, 4).state_dict()
    weights = _hub_layout(tmp_path / "hf", f"timm/{TAGGED}", state)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "runs"
    ckpt = Path(_ok("train", TAGGED, "--pretrained", "--freeze-backbone", "--img-size", "16", "--loss", "halo",
                    *FAST, "--out", out).strip().splitlines()[-1])
    assert _bit_equal(_backbone(ckpt), _file_backbone(state))  # 3 channels: the model keeps its own conv
    config = json.loads((ckpt.parent / "config.json").read_text())
    assert config["data_config"]["input_size"] == [3, 16, 16]
    assert config["data_config"]["mean"] == [0.5, 0.5, 0.5]  # test_resnet's own pretrained config
    assert config["weights"]["name"] == TAGGED and config["weights"]["path"] == str(weights)
    _ok("eval", ckpt.parent, *EVAL_FAST)
    # Full fine-tuning from the same cache, with the backbone at a tenth of the lr.
    full = Path(_ok("train", TAGGED, "--pretrained", "--img-size", "16", "--loss", "cce", *FAST,
                    "--out", out).strip().splitlines()[-1])
    assert not torch.equal(_backbone(full)["conv1.0.weight"], state["conv1.0.weight"])


def test_a_tagged_name_never_trains_from_random_weights(tmp_path) -> None:
    _fails("train", TAGGED, *FAST, "--out", tmp_path, match="names timm's pretrained weights")
    _fails("train", TINY, "--freeze-backbone", *FAST, "--out", tmp_path, match="needs --pretrained or --init-from")
    _fails("train", TINY, "--init-from", tmp_path / "nope.pth", *FAST, match="does not exist")


@pytest.mark.parametrize("offline", [True, False])
def test_missing_hub_weights_fail_at_once_with_the_fetch_command(tmp_path, monkeypatch, offline) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # no variable: a hub that cannot be reached is noticed in one probe, not 50 s of retries
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
        import halo_bench.models.weights as weights

        monkeypatch.setattr(weights, "_hub_reachable", lambda timeout=3.0, _real=weights._hub_reachable:
                            _real(timeout) and False)
    started = time.perf_counter()
    output = _fails("train", TAGGED, "--pretrained", *FAST, "--out", tmp_path,
                    match="huggingface-cli download timm/test_resnet.r160_in1k")
    assert time.perf_counter() - started < 10, output
    assert not (tmp_path / "digits-test_resnet.r160_in1k-halo-s0").exists()


def test_foreign_classifier_gives_timms_logits_and_evaluates(tmp_path) -> None:
    from halo_bench.data import load_registry
    from halo_bench.models.foreign import foreign_run

    theirs = _tiny(1, 6, 5)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": theirs.state_dict(), "epoch": 3}, path)
    model, meta = foreign_run(path, TINY, "digits", load_registry())
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), theirs(x))
        assert torch.equal(model.forward_features(x), theirs.forward_head(theirs.forward_features(x), pre_logits=True))
    # ViM's affine map from penultimate features to logits is the classifier's own fc.
    from halo_bench.detectors import DETECTORS, DetectorContext
    from halo_bench.detectors.tail import linear_map

    w, b = linear_map(DetectorContext(model=model, device=torch.device("cpu"), data_config={}), "vim")
    assert torch.equal(w, theirs.fc.weight.double()) and torch.equal(b, theirs.fc.bias.double())
    # Every detector that applies to a CCE model, at its defaults (knn's k clamped to the 40 train samples).
    out = tmp_path / "eval"
    _ok("eval", path, "--model", TINY, "--suite", "digits", "--limit", "40", "--device", "cpu", "--ood", "near",
        "--out", out)
    results = results_in(out)
    assert results["model"]["loss"] == "cce"
    assert set(results["ood"]) == {name for name, cls in DETECTORS.items() if not cls.halo_only}
    assert all(0 <= res["near"]["auroc"] <= 100 for res in results["ood"].values())
    assert results["detectors"]["knn"]["k_used"] == 39 and results["detectors"]["vim"]["dim_used"] == 48
    torch.save(_tiny(1, 10, 6).state_dict(), tmp_path / "ten.pth")
    _fails("eval", tmp_path / "ten.pth", "--model", TINY, "--suite", "digits", match="classifies 10 classes")
    _fails("eval", path, "--model", TINY, match="--model and --suite go together")


def test_a_foreign_files_ema_weights_have_features_of_their_own_and_nan_weights_are_refused(
        tmp_path, monkeypatch) -> None:
    """One file, two models (its weights and its EMA weights): they must not share feature-cache
    entries (the EMA eval read the plain weights' features). Non-finite weights are refused
    before anything runs."""
    from halo_bench.data import load_registry
    from halo_bench.features.cache import FeatureCache
    from halo_bench.models.load import Foreign, load_model

    plain, ema = _tiny(1, 6, 5), _tiny(1, 6, 5)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "two.pth.tar"
    torch.save({"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    registry = load_registry()
    a, b = (load_model(path, registry, Foreign(TINY, "digits", use_ema)) for use_ema in (False, True))
    assert a.sha256 == b.sha256 and a.model_key != b.model_key  # one file, two models
    assert not torch.equal(a.model.head.fc.weight, b.model.head.fc.weight)
    keys = []
    get = FeatureCache.get

    def recording(self, key, compute, n):  # every pass's cache key, also under --limit (no cache)
        keys.append(key.checkpoint_sha256)
        return get(self, key, compute, n)

    monkeypatch.setattr(FeatureCache, "get", recording)
    common = ("--model", TINY, "--suite", "digits", "--device", "cpu", "--ood", "near", "--detectors", "msp",
              "--limit", "20")
    _ok("eval", path, *common, "--out", tmp_path / "plain")
    _ok("eval", path, *common, "--use-ema", "--out", tmp_path / "ema")
    assert set(keys) == {a.model_key, b.model_key}  # every pass of each eval keyed by its own model
    state = plain.state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    torch.save({"state_dict": state}, tmp_path / "nan.pth.tar")
    cached = sorted(tmp_path.rglob("*.pt"))
    _fails("eval", tmp_path / "nan.pth.tar", *common, "--out", tmp_path / "nan", match="holds non-finite weights")
    assert sorted(tmp_path.rglob("*.pt")) == cached  # nothing computed, nothing cached


def test_new_flags_are_checked_before_torch_loads(tmp_path) -> None:
    code = PRELUDE + (
        "from halo_bench.cli import app\n"
        "import sys\n"
        f"sys.argv = ['halo-bench', 'train', '{TINY}', '--init-from', '{tmp_path / 'missing.pth'}']\n"
        "app(prog_name='halo-bench')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2 and "does not exist" in result.stdout + result.stderr, result


def test_the_readme_library_example_runs() -> None:
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "with_halo_head" in b]
    assert blocks
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102  (our own README)
    assert scope["logits"].shape == (8, 7) and scope["abstain"].shape == (8,)


def test_with_halo_head_freezes_the_backbone_as_timm_does() -> None:
    from halo_bench import with_halo_head

    model = with_halo_head(_tiny(1, 5, 7), num_classes=4, loss="cce", freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("reachable", [True, False])
def test_the_hub_probe_decides_between_timms_download_and_the_fetch_command(tmp_path, monkeypatch,
                                                                             reachable: bool) -> None:
    """weights._hub_reachable's two outcomes, with a stand-in for the network: no connection, no 3 s."""
    import socket

    from halo_bench.models import weights

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))  # nothing cached
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes, downloads = [], []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    def create_connection(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        if not reachable:
            raise socket.timeout("timed out")  # what a hub that never answers gives after `timeout`
        return Connection()

    stand_in = _tiny(3, 0, 0)

    def create_model(name, **kwargs):  # timm's download, stood in for
        downloads.append((name, kwargs))
        return stand_in

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(timm, "create_model", create_model)
    endpoints = ((None, ("huggingface.co", 443)), ("http://mirror.internal:8080", ("mirror.internal", 8080)),
                 ("https://hf-mirror.example", ("hf-mirror.example", 443)))
    for endpoint, address in endpoints:
        if endpoint is None:
            monkeypatch.delenv("HF_ENDPOINT", raising=False)
        else:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert weights._hub_reachable() is reachable and probes[-1] == (address, 3.0)
    started = time.perf_counter()
    if reachable:  # timm fetches the weights itself
        model, report = weights.create_pretrained(TAGGED, in_chans=3)
        assert model is stand_in and downloads == [(TAGGED, {"pretrained": True, "num_classes": 0, "in_chans": 3,
                                       "pretrained_cfg_overlay": None})]
        assert report.kind == "hf-hub" and report.path is None and report.name == TAGGED
    else:  # one probe, then the command that fetches them elsewhere
        with pytest.raises(HaloBenchError, match="the Hugging Face hub cannot be reached.*huggingface-cli download "
                                                 "timm/test_resnet.r160_in1k"):
            weights.create_pretrained(TAGGED, in_chans=3)
        assert downloads == []
    assert len(probes) == 4 and time.perf_counter() - started < 1.0
