"""Multi-process training: torchrun, 2 processes, the gloo backend on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from halo_bench.cli import app
from halo_bench.models import read_checkpoint

TINY = "test_resnet"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_trains_ddp_replicas_that_stay_equal_and_rank_0_writes_the_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), "-m", "halo_bench", "train", TINY, "--loss",
               "halo", "--epochs", "1", "--device", "cpu", "--data-pipeline", "device", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # Every rank compared its weights and buffers with rank 0's (exactly) before leaving.
    assert "weights identical on all 2 ranks" in output
    runs = list(tmp_path.iterdir())
    assert [r.name for r in runs] == ["digits-test_resnet-halo-s0"]
    state = read_checkpoint(runs[0] / "ckpt.pt")
    assert state["meta"]["complete"] and state["meta"]["world_size"] == 2
    assert state["meta"]["data_pipeline"] == "device"  # each rank its slice of the GPU path's global batch
    assert output.count("epoch 1/1:") == 1  # rank 0 alone logs
    history = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((runs[0] / "config.json").read_text())
    # The global batch of 64 is split in two: the epoch has the steps (and schedule) of one process.
    from halo_bench.data import load_registry, load_split

    registry = load_registry()
    n_train = len(load_split(registry.dataset("digits"), "train", registry.suite("digits").data_config))
    assert config["steps_per_epoch"] == n_train // 64 and history[0]["train_acc"] > 0
    assert done.stdout.count("ckpt.pt") == 1  # rank 0 alone prints the checkpoint
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_eval_and_bench_refuse_torchrun(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    for args in (["eval", str(tmp_path)], ["bench"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "runs in one process and is not sharded" in result.output, result.output
