"""Multi-process training: torchrun, 2 processes, the gloo backend on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clirun import cli_fails
from typer.testing import CliRunner

from halo_bench.cli import app
from halo_bench.models.checkpoint import read_checkpoint

TINY = "test_resnet"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PIPELINES = ("device", "loader")


@pytest.fixture(scope="module")
def torchrun_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """One 2-process torchrun training per input pipeline, both started at once: most of a
    launch is its processes importing torch, which the two launches overlap."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    started = {}
    for pipeline in PIPELINES:
        out = tmp_path_factory.mktemp(f"ddp-{pipeline}")
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", str(_free_port()), "-m", "halo_bench", "train", TINY, "--loss",
                   "halo", "--epochs", "1", "--device", "cpu", "--data-pipeline", pipeline, "--out", str(out)]
        started[pipeline] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                              env=env), out, command)
    done = {}
    for pipeline, (proc, out, command) in started.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[pipeline] = (subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), out)
    return done


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_torchrun_trains_ddp_replicas_that_stay_equal_and_rank_0_writes_the_run(torchrun_runs, pipeline: str) -> None:
    """device: each rank its slice of the global batch; loader: a DataLoader per rank over its
    DistributedSampler shard, at the per-rank batch."""
    done, tmp_path = torchrun_runs[pipeline]
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # Every rank compared its weights and buffers with rank 0's (exactly) before leaving.
    assert "weights identical on all 2 ranks" in output
    runs = list(tmp_path.iterdir())
    assert [r.name for r in runs] == ["digits-test_resnet-halo-s0"]
    state = read_checkpoint(runs[0] / "ckpt.pt")
    assert state["meta"]["complete"] and state["meta"]["world_size"] == 2
    assert state["meta"]["data_pipeline"] == pipeline
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


def test_sync_bn_converts_every_batchnorm_and_keeps_the_state_dict() -> None:
    from halo_bench.core.distributed import sync_batchnorm
    from halo_bench.models.classifier import build_model

    model = build_model(TINY, "halo", num_classes=6, in_chans=1, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = [name for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    sync_batchnorm(model)
    modules = dict(model.named_modules())
    assert all(type(modules[name]) is torch.nn.SyncBatchNorm for name in norms)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    build_model(TINY, "halo", num_classes=6, in_chans=1, seed=1).load_state_dict(after)  # strict: same keys


def test_sync_bn_needs_cuda_under_torchrun_and_does_nothing_in_one_process(tmp_path: Path, monkeypatch) -> None:
    from halo_bench.core.distributed import Ranks, check_sync_bn
    from halo_bench.core.errors import HaloBenchError

    assert check_sync_bn(Ranks(0, 2, 0), torch.device("cuda", 0)) is None  # it applies
    assert "nothing to synchronise" in check_sync_bn(Ranks(), torch.device("cpu"))
    with pytest.raises(HaloBenchError, match="SyncBatchNorm runs on CUDA"):
        check_sync_bn(Ranks(1, 2, 1), torch.device("cpu"))
    # Under torchrun on the CPU: refused before the process group (no rank left waiting for the other).
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # were init_process_group reached, it would fail, not wait
        monkeypatch.delenv(name, raising=False)
    cli_fails("train", TINY, "--sync-bn", "--epochs", "1", "--device", "cpu", "--out", tmp_path,
              match="--sync-bn synchronises BatchNorm across GPUs")
    assert not torch.distributed.is_initialized() and not any(tmp_path.iterdir())


def test_sync_bn_is_part_of_the_runs_configuration_but_not_of_its_name(tmp_path: Path, tiny_runs,
                                                                       registry) -> None:
    from halo_bench.train.config import saved_identity
    from halo_bench.train.loop import TrainConfig

    run = tmp_path / "digits-test_resnet-cce-s0"  # the name a run without --sync-bn has
    result = CliRunner().invoke(app, ["train", TINY, "--loss", "cce", "--sync-bn", "--epochs", "1", "--device",
                                      "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing to synchronise" in result.output  # one process: said, and trained as without it
    assert json.loads((run / "config.json").read_text())["train_config"]["sync_bn"] is True
    cli_fails("train", TINY, "--loss", "cce", "--epochs", "1", "--device", "cpu", "--out", tmp_path,
              match="holds a run with a different configuration")
    # A run without it records the config it always had (older halo-bench resumes it, reports group it
    # with older runs), and a config saved before the field existed resumes as the flag's default.
    saved = read_checkpoint(tiny_runs["cce"])["meta"]["train_config"]
    assert "sync_bn" not in saved
    assert "sync_bn" not in json.loads((tiny_runs["cce"].parent / "config.json").read_text())["train_config"]
    cfg = TrainConfig(model=TINY, loss="cce", epochs=2, out=str(tiny_runs["cce"].parent.parent)).resolved(registry)
    assert saved_identity(saved) == cfg.identity() == saved_identity({**saved, "sync_bn": False})
    assert saved_identity(saved) != TrainConfig(**{**cfg.record(), "sync_bn": True}).identity()
