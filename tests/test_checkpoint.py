"""Checkpoints: round trip, atomic writes, and refusal of anything that is not ours."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from halo_bench.core.errors import HaloBenchError
from halo_bench.core.io import atomic_write_text
from halo_bench.models.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from halo_bench.models.classifier import build_model, model_meta


def _model(loss: str = "halo"):
    return build_model("test_resnet", loss, num_classes=6, in_chans=1, seed=0)


def test_round_trip_keeps_weights_and_outputs(tmp_path: Path) -> None:
    model = _model().eval()
    meta = {"model": model_meta(model, "test_resnet", "halo", 1), "note": "plain data only"}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta["note"] == "plain data only"
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert float(loaded.head.abstain_bias) == float(model.head.abstain_bias)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_and_not_executed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "halo-bench-checkpoint", "payload": _Exploit()}, path)
    with pytest.raises(HaloBenchError, match="refused to load"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()
    with path.open("wb") as handle:  # a raw pickle, not even a torch zip
        pickle.dump(_Exploit(), handle)
    with pytest.raises(HaloBenchError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_corrupt_truncated_foreign_and_missing_files(tmp_path: Path) -> None:
    model = _model("cce")
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, {"model": model_meta(model, "test_resnet", "cce", 1)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(HaloBenchError, match="not a readable checkpoint"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(HaloBenchError):
        read_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(HaloBenchError, match="not a halo-bench checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(HaloBenchError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    from halo_bench.core.io import atomic_open

    path = tmp_path / "results.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_same_seed_shares_everything_but_the_head() -> None:
    cce, halo = _model("cce"), _model("halo")
    a = {k: v for k, v in cce.state_dict().items() if not k.startswith("head.")}
    b = {k: v for k, v in halo.state_dict().items() if not k.startswith("head.")}
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = build_model("test_resnet", "cce", num_classes=6, in_chans=1, seed=1)
    assert not torch.equal(other.embed.weight, cce.embed.weight)


def test_unknown_model_name_suggests_timm_names() -> None:
    with pytest.raises(HaloBenchError, match="Did you mean 'resnet18'"):
        build_model("resnet81", "cce", num_classes=6, in_chans=1)
