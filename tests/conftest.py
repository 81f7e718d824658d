"""Shared fixtures: tiny trained runs (timm's test_resnet on the embedded suite)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HALO_BENCH_PROGRESS"] = "0"

TINY_MODEL = "test_resnet"


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same torch generator state, alone or in any order
    (pytest-randomly reseeds random and numpy, not torch)."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def registry():
    from halo_bench.data import load_registry

    return load_registry()


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, registry) -> dict[str, Path]:
    """One CCE and one HALO run of 2 epochs, trained once for the whole session."""
    from halo_bench.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for loss in ("cce", "halo"):
        result = train(TrainConfig(model=TINY_MODEL, loss=loss, epochs=2, out=str(out)), registry)
        runs[loss] = result.checkpoint
    return runs


@pytest.fixture(scope="session")
def names_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh timm model-name cache, written once for the session (the first write imports timm):
    the environment that points halo-bench at it."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("names-cache")
    env = {"HALO_BENCH_CACHE": str(folder)}
    subprocess.run([sys.executable, "-c", "from halo_bench.models.timm_names import model_names; model_names()"],
                   check=True, timeout=120, env={**os.environ, **env})
    return env
