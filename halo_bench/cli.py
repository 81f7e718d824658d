"""The `halo-bench` command line: parses arguments and calls into the library.

torch and timm are imported inside the commands, so `halo-bench --help` is instant.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from .errors import HaloBenchError

app = typer.Typer(
    name="halo-bench",
    help="Train timm classifiers with cross-entropy (CCE) or the HALO loss, and compare "
    "their calibration and OOD detection against the classic post-hoc detectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])

RegistryOpt = Annotated[Optional[Path], typer.Option(
    "--registry", help="Dataset registry YAML (default: $HALO_BENCH_DATASETS, else the packaged datasets.yaml).",
    show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Folder holding the datasets (default: $HALO_BENCH_DATA, else ./data).",
    show_default=False)]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--num-workers", min=0, help="DataLoader worker processes (default: 0 for in-memory data, up to 8 for image files).",
    show_default=False)]


def _user_errors(func: F) -> F:
    """Print a HaloBenchError as one line and exit 2; no traceback for mistakes a user can fix."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HaloBenchError as exc:
            _print_error(_strip_worker_traceback(str(exc)))
            raise typer.Exit(code=2) from None
        except OSError as exc:
            if not exc.filename:  # not about a path the user gave: a real failure, keep its traceback
                raise
            paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p)
            _print_error(f"{exc.strerror or _strip_worker_traceback(str(exc))}: {paths}")
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            from .console import console

            console.print("interrupted. A training run resumes from its last checkpoint when you run "
                          "the same command again.")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str) -> None:
    from rich.text import Text

    from .console import console

    console.print(Text.assemble(("error: ", "bold red"), message))  # Text: no markup parsing


def _strip_worker_traceback(message: str) -> str:
    """A DataLoader worker re-raises our error with its traceback in the message: keep our words.

    The words follow the last `module.ErrorType: ` line of the traceback, and may span lines.
    """
    if "Original Traceback" not in message:
        return message
    lines = message.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_][\w.]*: ", line)]
    if not starts:
        return lines[-1]
    first = lines[starts[-1]].split(": ", 1)[1]
    return "\n".join([first, *lines[starts[-1] + 1:]])


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _seeds(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise HaloBenchError(f"--seeds takes comma-separated integers, got {value!r}.") from None


@app.command()
@_user_errors
def train(
    model: Annotated[str, typer.Argument(help="timm model name, e.g. resnet18 (randomly initialised).")],
    loss: Annotated[str, typer.Option("--loss", help="Training loss: cce or halo.")] = "halo",
    suite: Annotated[str, typer.Option("--suite", help="Suite from the registry; its ID set is trained on.")] = "digits",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default: the suite's recipe).", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate of the cosine schedule (default: recipe).", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default: recipe).", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="SGD weight decay, not applied to biases, norms and scalars (default: recipe).", show_default=False)] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="Clip the gradient norm at this value; 0 turns clipping off (default: recipe).", show_default=False)] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", help="Linear warm-up epochs before the cosine decay (default: recipe).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initialisation and data order; CCE and HALO of one seed share both.")] = 0,
    embed_dim: Annotated[Optional[int], typer.Option("--embed-dim", help="Embedding size D fed to the head (default: number of classes K).", show_default=False)] = None,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="HALO: label smoothing ls (sets the target mass and the abstain bias).")] = 0.1,
    distill: Annotated[bool, typer.Option("--distill/--no-distill", help="HALO: self-distilled negative targets, or plain label smoothing.")] = True,
    learn_gamma: Annotated[bool, typer.Option("--learn-gamma/--freeze-gamma", help="HALO: learn the temperature, or keep its closed-form initial value.")] = True,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the run directory <suite>-<model>-<loss>-s<seed>.")] = Path("runs"),
    device: DeviceOpt = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 where supported); ignored on the CPU.")] = True,
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last", help="channels-last memory format on CUDA.")] = True,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the backbone.")] = False,
    num_workers: WorkersOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain from scratch even if the run directory holds a checkpoint.")] = False,
    data_root: DataRootOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Train MODEL on a suite's ID set; resumes an interrupted run of the same config."""
    from .registry import load_registry
    from .train import TrainConfig
    from .train import train as run_train

    cfg = TrainConfig(model=model, loss=loss, suite=suite, seed=seed, epochs=epochs, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, warmup_epochs=warmup_epochs,
                      embed_dim=embed_dim, label_smoothing=label_smoothing, distill=distill,
                      learn_gamma=learn_gamma, device=device, amp=amp, channels_last=channels_last,
                      compile=compile, num_workers=num_workers, out=str(out),
                      data_root=str(data_root) if data_root else None)
    result = run_train(cfg, load_registry(registry), force=force)
    typer.echo(str(result.checkpoint))


@app.command("eval")
@_user_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (ckpt.pt) or its run directory.")],
    ood: Annotated[Optional[str], typer.Option("--ood", help="Comma-separated OOD sets, by name or group (near, far) (default: the whole suite).", show_default=False)] = None,
    detectors: Annotated[Optional[str], typer.Option("--detectors", help="Comma-separated detectors, each optionally with settings NAME:PARAM=VALUE[:PARAM=VALUE], e.g. knn:k=100,odin:temperature=1000:eps=0.0014 (default: all that apply, at their defaults); see `halo-bench detectors`.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for results.json and scores.csv.gz (default: the checkpoint's folder).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Evaluation batch size.")] = 256,
    device: DeviceOpt = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA for the forward passes.")] = True,
    num_workers: WorkersOpt = None,
    data_root: Annotated[Optional[Path], typer.Option(
        "--data-root", help="Folder holding the datasets (default: $HALO_BENCH_DATA, else the one the "
        "checkpoint was trained from).", show_default=False)] = None,
    tune: Annotated[bool, typer.Option("--tune", help="Also report each detector with its hyperparameters chosen by AUROC on the suite's ID-validation vs OOD-validation sets (never test data), as NAME[tuned] rows; the defaults stay the main rows.")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store forward passes in <checkpoint folder>/feature-cache (keyed by the checkpoint's hash, dataset, split and transform); --no-cache runs every pass and writes nothing.")] = True,
    registry: RegistryOpt = None,
) -> None:
    """Evaluate a checkpoint: ID accuracy and calibration, and OOD detection per detector."""
    from .evaluate import EvalConfig, evaluate, summarize
    from .registry import load_registry

    cfg = EvalConfig(checkpoint=str(checkpoint), ood=_split(ood), detectors=_split(detectors),
                     out=str(out) if out else None, device=device, batch_size=batch_size, amp=amp,
                     data_root=str(data_root) if data_root else None, num_workers=num_workers, cache=cache, tune=tune)
    results, path = evaluate(cfg, load_registry(registry))
    typer.echo(summarize(results))
    typer.echo(str(path))


@app.command()
@_user_errors
def report(
    results: Annotated[Optional[list[Path]], typer.Argument(help="results.json files or folders to search (default: every results.json under --runs).", show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="markdown, csv, json or latex.")] = "markdown",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file instead of standard output.", show_default=False)] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder searched when no RESULTS are given.")] = Path("runs"),
) -> None:
    """CCE vs HALO side by side per detector: near/far means, deltas, mean ± std over seeds."""
    from .io import atomic_write_text
    from .report import find_results, load_results, render

    text = render(load_results(find_results(results or [], runs)), format)
    if output:
        atomic_write_text(output, text)
        typer.echo(str(output))
    else:
        typer.echo(text, nl=False)


@app.command()
@_user_errors
def bench(
    model: Annotated[str, typer.Option("--model", help="timm model name.")] = "resnet18",
    suite: Annotated[str, typer.Option("--suite", help="Suite to train and evaluate on.")] = "digits",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds; each trains one CCE and one HALO run.")] = "0,1,2",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per run (default: the suite's recipe).", show_default=False)] = None,
    detectors: Annotated[Optional[str], typer.Option("--detectors", help="Comma-separated detectors (default: all).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the runs and the report.")] = Path("runs"),
    device: DeviceOpt = "auto",
    force: Annotated[bool, typer.Option("--force", help="Retrain runs that are already complete.")] = False,
    data_root: DataRootOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """The main job: train CCE and HALO for each seed, evaluate all, print the report."""
    from .bench import BenchConfig, run_bench

    cfg = BenchConfig(model=model, suite=suite, seeds=_seeds(seeds), epochs=epochs,
                      detectors=_split(detectors), out=str(out), device=device, force=force,
                      registry=str(registry) if registry else None,
                      data_root=str(data_root) if data_root else None)
    text, path = run_bench(cfg)
    typer.echo(text)
    typer.echo(f"report written to {path}")


@app.command()
@_user_errors
def datasets(data_root: DataRootOpt = None, registry: RegistryOpt = None) -> None:
    """List the registry's datasets (present or not, size, how to get them) and suites."""
    from rich.table import Table

    from .console import console
    from .data import how_to_get, presence, resolve_data_root
    from .registry import load_registry

    reg = load_registry(registry)
    root = resolve_data_root(data_root)
    table = Table(title=f"datasets under {root} (registry {reg.path})")
    for col in ("name", "source", "status", "size", "description"):
        table.add_column(col)
    missing: dict[str, list[str]] = {}
    for spec in reg.datasets.values():
        found = presence(spec, root)
        size = _human_size(found.size_bytes, found.size_complete) if found.status == "present" else "-"
        style = {"present": "green", "missing": "red"}.get(found.status, "dim")
        names = spec.name + (f" ({', '.join(spec.aliases)})" if spec.aliases else "")
        table.add_row(names, spec.source, f"[{style}]{found.status}[/]", size, spec.description)
        if found.status == "missing":
            missing.setdefault(how_to_get(spec, root), []).append(spec.name)
    suites = Table(title="suites")
    for col in ("name", "ID", "near", "far", "description"):
        suites.add_column(col)
    for s in reg.suites.values():
        suites.add_row(s.name, s.id, ", ".join(s.near), ", ".join(s.far), s.description)
    console.print(table, suites, soft_wrap=False)
    if missing:
        console.print("[bold]How to get the missing datasets[/]")
        for instruction, names in missing.items():
            console.print(f"- {', '.join(names)}: {instruction}", soft_wrap=True)


def _human_size(num: int, complete: bool) -> str:
    size = float(num)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            text = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            return text if complete else f">= {text}"
        size /= 1024
    return str(num)


@app.command()
@_user_errors
def download(
    names: Annotated[list[str], typer.Argument(help="Datasets (names or aliases) to fetch.")],
    data_root: DataRootOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Fetch datasets that torchvision can download and verify; print how to get the others."""
    from .console import console
    from .data import SOURCES, how_to_get, presence, resolve_data_root
    from .registry import load_registry

    reg = load_registry(registry)
    root = resolve_data_root(data_root)
    specs = {spec.name: spec for spec in map(reg.dataset, names)}  # unknown names fail first
    not_fetched = []
    for spec in specs.values():
        fetch = SOURCES[spec.source].download
        if fetch is not None:
            console.print(f"{spec.name}: downloading into {root} (torchvision verifies the checksums)")
            try:
                fetch(spec, root)
            except (OSError, RuntimeError, ValueError) as exc:
                raise HaloBenchError(f"{spec.name}: download failed: {exc}") from None
            console.print(f"{spec.name}: [green]ready[/]")
        elif presence(spec, root).status in ("present", "in package"):
            console.print(f"{spec.name}: [green]already present[/]")
        else:
            not_fetched.append(spec.name)
            console.print(f"{spec.name}: cannot be downloaded automatically. {how_to_get(spec, root)}")
    if not_fetched:
        raise typer.Exit(code=1)


@app.command()
def detectors() -> None:
    """List the OOD detectors, their defaults and what they need."""
    from rich.table import Table

    from .console import console
    from .detectors import DETECTORS

    table = Table(title="detectors (score: higher = more in-distribution)")
    for col in ("name", "score", "reads", "defaults", "--tune grid", "needs"):
        table.add_column(col, no_wrap=col in ("name", "reads"))
    for cls in DETECTORS.values():
        needs = [n for n, on in (("HALO model", cls.halo_only), ("ID-train pass", cls.needs_train),
                                 ("gradient passes", cls.needs_inputs)) if on]
        defaults = ", ".join(f"{k}={v:g}" for k, v in cls.defaults.items())
        grid = "; ".join(f"{k} in {{{', '.join(f'{v:g}' for v in values)}}}" for k, values in cls.tune_grid.items())
        table.add_row(cls.name, cls.summary, cls.reads, defaults or "-", grid or "-", ", ".join(needs) or "-")
    console.print(table, soft_wrap=False)
    console.print("Set parameters with --detectors NAME:PARAM=VALUE, e.g. knn:k=100,odin:temperature=1000:eps=0.0014; "
                  "a detector with non-default settings is reported as NAME[PARAM=VALUE]. 'penultimate' = the "
                  "backbone's pooled features (OpenOOD's); 'embedding' = the layer the head reads.", soft_wrap=True)


@app.command()
def version() -> None:
    """Print the halo-bench version."""
    from . import __version__

    typer.echo(__version__)


def main() -> None:
    app(prog_name="halo-bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
