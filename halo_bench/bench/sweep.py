"""The main job: every loss on one suite over several seeds, trained, evaluated and reported."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.console import console
from ..core.errors import HaloBenchError
from ..core.io import atomic_write_text
from ..core.runtime import Runtime
from ..train.config import TrainConfig, check_seeds

if TYPE_CHECKING:  # evaluate imports torch; bench's checks run before it loads
    from ..evaluate.run import EvalConfig


@dataclass
class BenchConfig(Runtime):
    """The main job: every loss of `losses` for each seed, on one model and suite; the
    `Runtime` settings are every run's and every evaluation's."""

    model: str = "resnet18"
    suite: str = "digits"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    losses: list[str] = field(default_factory=lambda: ["cce", "halo"])  # each "name[:knob=value...]"
    baseline: str | None = None  # default: the first loss
    epochs: int | None = None
    detectors: list[str] | None = None
    out: str = "runs"
    force: bool = False
    registry: str | None = None
    shift: list[str] | None = None  # --shift: every evaluation also under covariate shift
    severities: list[int] | None = None

    def train_configs(self) -> list[TrainConfig]:
        """One training config per (seed, loss), seeds outermost."""
        from ..losses import parse_loss

        parsed = [parse_loss(loss) for loss in self.losses]
        return [TrainConfig(model=self.model, loss=spec.name, loss_knobs=dict(knobs), suite=self.suite, seed=seed,
                            epochs=self.epochs, out=self.out, **vars(self.runtime()))
                for seed in self.seeds for spec, knobs in parsed]

    def eval_config(self, checkpoint: str | Path) -> EvalConfig:
        """How each run is evaluated: every detector of --detectors, the whole suite (and with
        --shift its shifted ID sets)."""
        from ..evaluate.run import EvalConfig

        return EvalConfig(checkpoint=str(checkpoint), detectors=self.detectors, shift=self.shift,
                          severities=self.severities, **vars(self.runtime()))

    def loss_tags(self) -> list[str]:
        return list(dict.fromkeys(cfg.loss_tag for cfg in self.train_configs()[: len(self.losses)]))

    def report_path(self) -> Path:
        """Named by what it covers, so a bench over other losses or seeds never overwrites it."""
        seeds = "-".join(map(str, self.seeds))
        return Path(self.out) / f"report-{self.suite}-{self.model}-{'_'.join(self.loss_tags())}-s{seeds}.md"


def check_bench(cfg: BenchConfig) -> None:
    """Every name and value checked before anything trains (and before torch loads)."""
    from ..data import load_registry
    from ..models.timm_names import check_model_name

    check_seeds(cfg.seeds, "--seeds")  # before the runs' own checks, which would name --seed
    if not cfg.losses:
        raise HaloBenchError("--losses names no loss; give at least one.")
    registry = load_registry(cfg.registry)
    configs = cfg.train_configs()
    for tcfg in configs:
        tcfg.resolved(registry)
    tags = cfg.loss_tags()
    if len(tags) != len(cfg.losses):
        raise HaloBenchError(f"--losses lists one loss twice ({', '.join(cfg.losses)}).")
    if cfg.baseline is not None and cfg.baseline not in tags:
        raise HaloBenchError(f"--baseline {cfg.baseline!r} is not one of the benched losses: {', '.join(tags)}.")
    check_model_name(cfg.model)
    from ..evaluate.preflight import check_bench_request

    # Detectors and datasets too: a bad --detectors must not wait for the first run to train.
    check_bench_request(registry, cfg.suite, [c.loss for c in configs[: len(cfg.losses)]], cfg.detectors,
                        cfg.data_root, cfg.shift, cfg.severities)


def run_bench(cfg: BenchConfig) -> tuple[str, Path]:
    """Train (or reuse) every (loss, seed) run, evaluate each, write and return the report."""
    from ..data import load_registry
    from ..evaluate.run import evaluate, summarize
    from ..train.loop import train

    check_bench(cfg)
    registry = load_registry(cfg.registry)
    from ..evaluate.preflight import check_fit_sizes

    check_fit_sizes(registry, cfg.suite, cfg.detectors, cfg.data_root)  # e.g. knn:k past the train split
    started = time.perf_counter()
    result_paths = []
    for tcfg in cfg.train_configs():
        trained = train(tcfg, registry, force=cfg.force)
        results, path = evaluate(cfg.eval_config(trained.checkpoint), registry)
        console.print(summarize(results))
        result_paths.append(path)
    baseline = cfg.baseline or cfg.loss_tags()[0]
    minutes = (time.perf_counter() - started) / 60
    wall = f"Wall time: {minutes:.1f} min for {len(result_paths)} runs (training and evaluation)."
    report_path = cfg.report_path()
    return write_reports(result_paths, baseline, report_path, wall), report_path


def write_reports(result_paths: list[Path], baseline: str, report_path: Path, footer: str = "") -> str:
    """The markdown report at `report_path` and the HTML one beside it (same name, .html), both
    from one assembled report; returns the markdown."""
    from ..report.assemble import build_report
    from ..report.plots import figures
    from ..report.render import render_report
    from ..report.tidy import load_results

    console.print(f"writing the report over {len(result_paths)} runs: {report_path} and its HTML page", markup=False)
    report = build_report(load_results(result_paths), baseline)
    text = render_report(report, "markdown") + (f"\n{footer}\n" if footer else "")
    atomic_write_text(report_path, text)
    page = render_report(report, "html", figures(report))
    if footer:
        page = page.replace("</main>", f"<p>{footer}</p>\n</main>")
    atomic_write_text(report_path.with_suffix(".html"), page)
    return text
