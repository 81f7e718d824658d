"""Training: resume after an interruption, divergence handling, run-directory contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from halo_bench.errors import HaloBenchError
from halo_bench.models import read_checkpoint
from halo_bench.train import TrainConfig, TrainingDiverged, train

TINY = "test_resnet"


class _Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, registry) -> None:
    straight = train(TrainConfig(model=TINY, loss="halo", epochs=3, out=str(tmp_path / "a")), registry)

    def stop_after_first(epoch: int) -> None:
        if epoch == 1:
            raise _Interrupt

    cfg = TrainConfig(model=TINY, loss="halo", epochs=3, out=str(tmp_path / "b"))
    with pytest.raises(_Interrupt):
        train(cfg, registry, on_epoch_end=stop_after_first)
    state = read_checkpoint(tmp_path / "b" / cfg.run_name / "ckpt.pt")
    assert state["meta"]["epochs_done"] == 1 and not state["meta"]["complete"]
    resumed = train(cfg, registry)
    assert resumed.epochs_run == 2
    a = read_checkpoint(straight.checkpoint)["model"]
    b = read_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_run_directory_records_config_versions_and_metrics(tiny_runs) -> None:
    run_dir = tiny_runs["halo"].parent
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_config"]["seed"] == 0 and config["train_config"]["lr"] == 0.05
    assert config["model"]["head"]["type"] == "halo" and config["model"]["embed_dim"] == 6
    assert {"torch", "timm", "python", "halo-bench"} <= set(config["versions"])
    assert config["data_config"]["input_size"] == [1, 8, 8]
    meta = read_checkpoint(tiny_runs["halo"])["meta"]
    assert meta["complete"] and read_checkpoint(tiny_runs["halo"])["train_state"] is None
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_complete_run_is_skipped_and_a_different_config_is_refused(tiny_runs, registry) -> None:
    out = str(tiny_runs["cce"].parent.parent)
    again = train(TrainConfig(model=TINY, loss="cce", epochs=2, out=out), registry)
    assert again.skipped
    with pytest.raises(HaloBenchError, match="different configuration.*--force"):
        train(TrainConfig(model=TINY, loss="cce", epochs=2, lr=0.3, out=out), registry)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path: Path, registry,
                                                                         monkeypatch) -> None:
    from halo_bench import heads

    cfg = TrainConfig(model=TINY, loss="cce", epochs=3, out=str(tmp_path))
    original = heads.LinearHead.loss
    calls = {"n": 0}
    steps_per_epoch = 758 // 64

    def poisoned(self, x, y, reduction=None):
        calls["n"] += 1
        loss = original(self, x, y, reduction)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 3 else loss

    monkeypatch.setattr(heads.LinearHead, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 2, step 4 .*last good checkpoint \\(epoch 1\\)"):
        train(cfg, registry)
    state = read_checkpoint(tmp_path / cfg.run_name / "ckpt.pt")
    assert state["meta"]["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_halo_recipe_is_stable_on_the_embedded_suite(tiny_runs) -> None:
    meta = read_checkpoint(tiny_runs["halo"])["meta"]
    assert meta["final"]["gamma"] > 1.0  # the temperature did not collapse
    assert meta["final"]["test_acc"] > 50.0
