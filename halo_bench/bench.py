"""The main job: CCE and HALO on one suite over several seeds, evaluated and reported."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .console import console
from .evaluate import EvalConfig, evaluate, summarize
from .io import atomic_write_text
from .registry import load_registry
from .report import load_results, render
from .train import TrainConfig, train


@dataclass
class BenchConfig:
    model: str = "resnet18"
    suite: str = "digits"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    losses: list[str] = field(default_factory=lambda: ["cce", "halo"])
    epochs: int | None = None
    detectors: list[str] | None = None
    out: str = "runs"
    device: str = "auto"
    force: bool = False
    registry: str | None = None
    data_root: str | None = None


def run_bench(cfg: BenchConfig) -> tuple[str, Path]:
    """Train (or reuse) every (loss, seed) run, evaluate each, write and return the report."""
    registry = load_registry(cfg.registry)
    registry.suite(cfg.suite)  # fail before any training on a typo
    started = time.perf_counter()
    result_paths = []
    for seed in cfg.seeds:
        for loss in cfg.losses:
            tcfg = TrainConfig(model=cfg.model, loss=loss, suite=cfg.suite, seed=seed, epochs=cfg.epochs,
                               out=cfg.out, device=cfg.device, data_root=cfg.data_root)
            trained = train(tcfg, registry, force=cfg.force)
            results, path = evaluate(EvalConfig(str(trained.checkpoint), detectors=cfg.detectors,
                                                device=cfg.device, data_root=cfg.data_root), registry)
            console.print(summarize(results))
            result_paths.append(path)
    report = render(load_results(result_paths), "markdown")
    minutes = (time.perf_counter() - started) / 60
    report += f"\nWall time: {minutes:.1f} min for {len(result_paths)} runs (training and evaluation).\n"
    report_path = Path(cfg.out) / f"report-{cfg.suite}-{cfg.model}.md"
    atomic_write_text(report_path, report)
    return report, report_path
