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

from .core.errors import HaloBenchError
from .data.base import check_data_pipeline
from .evaluate.preflight import check_eval_request

app = typer.Typer(
    name="halo-bench",
    help="Train timm classifiers with cross-entropy (CCE) or the HALO loss, and compare "
    "their calibration and OOD detection against the classic post-hoc detectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: it wraps at any width and never cuts an option's name, and a switch
    # shows no type (rich panels print "<bool>" and truncate the option column at 80 columns).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])

RegistryOpt = Annotated[Optional[Path], typer.Option(
    "--registry", help="Dataset registry YAML (default: $HALO_BENCH_DATASETS, else the packaged datasets.yaml).",
    show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    "--data-root", "--data-dir", help="Folder holding the datasets (default: $HALO_BENCH_DATA, else ./data).",
    show_default=False)]
PipelineOpt = Annotated[str, typer.Option(
    "--data-pipeline", help="auto: in-memory image arrays (CIFAR, SVHN, MNIST, embedded) are held on a GPU and "
    "augmented there, the DataLoader serves the rest and everything on a CPU; device: insist on that; loader: "
    "always the DataLoader. See docs/cluster-gpu.md.")]
ShiftOpt = Annotated[Optional[str], typer.Option(
    "--shift", help="Also evaluate under covariate shift, on the suite's shifted ID sets (its `shift:` entry: the "
    "published CIFAR-10-C / CIFAR-100-C / ImageNet-C files when under the data root, else generated from its ID test "
    "split): all, standard (CIFAR-10-C's 15), a group (noise, blur, weather, digital) or comma-separated "
    "corruptions, e.g. gaussian_noise,contrast. Per corruption and severity: ID accuracy and calibration (raw and "
    "temperature-scaled), full-spectrum AUROC / FPR@95 and rejection rates per detector (ODIN left out); written "
    "beside the default evaluation (results-shift*.json). See docs/protocol.md 'Covariate shift'.",
    show_default=False)]
SeveritiesOpt = Annotated[Optional[str], typer.Option(
    "--severities", help="With --shift: comma-separated severities from 1 to 5 (default: all five).",
    show_default=False)]
AmpOpt = Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 where supported); "
                                     "ignored on the CPU.")]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last/--no-channels-last",
                                               help="channels-last memory format on CUDA.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--num-workers", "--workers", "-j", min=0, help="DataLoader worker processes (default: 0 for in-memory data: "
    "CIFAR, SVHN, the MNIST family and the embedded sets; for image files, up to 8 of the CPUs this process may use).",
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
            from .core.console import console

            console.print("interrupted. A training run resumes from its last checkpoint when you run "
                          "the same command again.")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str) -> None:
    from rich.text import Text

    from .core.console import console

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
    """Comma-separated seeds: in [0, 2**32 - 1], no duplicates, at least one."""
    from .train.config import check_seeds

    try:
        seeds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise HaloBenchError(f"--seeds takes comma-separated integers, got {value!r}.") from None
    check_seeds(seeds, "--seeds")
    return seeds


def with_knob_flags(func: F) -> F:
    """Give `func` (a command) one option per loss knob of the registered losses, generated
    from the knobs' fields (losses/base.py), and pass the ones given as `knob_flags`. A new
    loss's knobs reach `train` without edits here."""
    import inspect

    from .losses import knob_fields

    params, annotations = [], {}
    for name, owners in knob_fields().items():
        first = owners[0][1]
        kind = type(first.default)
        dash = name.replace("_", "-")
        decl = first.metadata.get("flag") or (f"--{dash}/--no-{dash}" if kind is bool else f"--{dash}")
        aliases = tuple(dict.fromkeys(a for _, f in owners for a in f.metadata.get("aliases", ())))
        help_text = "Knob of " + "; of ".join(
            f"{spec.name} (default {_knob_default(f.default)}): {f.metadata.get('help', '')}" for spec, f in owners) + "."
        annotation = Annotated[Optional[kind], typer.Option(decl, *aliases, help=help_text, show_default=False)]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
        annotations[name] = annotation

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in annotations if kwargs.get(name) is not None}
        for name in annotations:
            kwargs.pop(name, None)
        return func(*args, knob_flags=flags, **kwargs)

    signature = inspect.signature(func, eval_str=True)  # typer reads the options from evaluated annotations
    kept = [p for p in signature.parameters.values() if p.name != "knob_flags"]
    wrapper.__signature__ = signature.replace(parameters=kept + params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in func.__annotations__.items() if k != "knob_flags"}, **annotations}
    return wrapper  # type: ignore[return-value]


def _knob_default(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


LossKnobHelp = "(see `halo-bench losses`)"


def _print_version(value: bool) -> None:
    if value:
        from .core.provenance import __version__

        typer.echo(f"halo-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Train timm classifiers with cross-entropy (CCE), the HALO loss or other registered losses, and
    compare their calibration and OOD detection against the post-hoc detectors."""


@app.command()
@with_knob_flags
@_user_errors
def train(
    model: Annotated[str, typer.Argument(help="timm model name, e.g. resnet18 (randomly initialised unless "
                                         "--pretrained or --init-from), or name.tag with --pretrained.")],
    loss: Annotated[str, typer.Option("--loss", help="Training loss, optionally with knobs: cce, logitnorm, halo, "
                                      f"or e.g. cce:label_smoothing=0.1 {LossKnobHelp}.")] = "halo",
    suite: Annotated[str, typer.Option("--suite", help="Suite from the registry; its ID set is trained on.")] = "digits",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default: the suite's recipe).", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate of the cosine schedule, at most 10 (default: recipe).", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Batch size (default: recipe).", show_default=False)] = None,
    momentum: Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum (default: recipe).", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="SGD weight decay, not applied to biases, norms and scalars; at most 1 (default: recipe).", show_default=False)] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", "--clip-grad", help="Clip the gradient norm at this value; 0 turns clipping off (default: recipe).", show_default=False)] = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", help="Linear warm-up epochs before the cosine decay (default: recipe).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initialisation and data order; runs of every loss with one seed share both.")] = 0,
    embed_dim: Annotated[Optional[int], typer.Option("--embed-dim", help="Embedding size D fed to the head (default: number of classes K).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the run directory <suite>-<model>-<loss>-s<seed>.")] = Path("runs"),
    device: DeviceOpt = "auto",
    amp: AmpOpt = True,
    channels_last: ChannelsLastOpt = True,
    compile: Annotated[bool, typer.Option("--compile", "--torchcompile", help="torch.compile the backbone.")] = False,
    num_workers: WorkersOpt = None,
    data_pipeline: PipelineOpt = "auto",
    force: Annotated[bool, typer.Option("--force", help="Retrain from scratch even if the run directory holds a checkpoint.")] = False,
    data_root: DataRootOpt = None,
    registry: RegistryOpt = None,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start from timm's pretrained weights for MODEL (name or name.tag), read from the Hugging Face cache; the model's own data config (input size, mean, std, ...) is used.")] = False,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", "--initial-checkpoint", help="Start from a local weights file: a state_dict (.pth, .bin, .safetensors), a timm train.py checkpoint or a halo-bench ckpt.pt (its backbone and embedding, and its head for the same loss). Never unpickles objects.", show_default=False)] = None,
    use_ema: Annotated[bool, typer.Option("--use-ema", help="With --init-from: take the timm checkpoint's state_dict_ema.")] = False,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone", help="Train only the embedding and the head, on backbone features computed once (backbone in eval mode, no augmentation).")] = False,
    backbone_lr_scale: Annotated[Optional[float], typer.Option("--backbone-lr-scale", help="Backbone learning rate = --lr x this (default: 0.1 with loaded weights, else 1).", show_default=False)] = None,
    img_size: Annotated[Optional[int], typer.Option("--img-size", help="Input height and width (default: the pretrained model's, else the suite's).", show_default=False)] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm), not each GPU's slice of it; part of the run's configuration.")] = False,
    knob_flags: dict[str, Any] | None = None,
) -> None:
    """Train MODEL on a suite's ID set; resumes an interrupted run of the same config.

    Several GPUs: torchrun --nproc-per-node N -m halo_bench train ... (--batch-size is the global batch; --sync-bn
    takes BatchNorm statistics over it)."""
    from .data import load_registry
    from .losses import parse_loss
    from .models.timm_names import check_model_name
    from .train.config import TrainConfig

    spec, knobs = parse_loss(loss)
    knobs.update(knob_flags or {})
    cfg = TrainConfig(model=model, loss=spec.name, suite=suite, seed=seed, epochs=epochs, batch_size=batch_size,
                      lr=lr, momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip,
                      warmup_epochs=warmup_epochs, embed_dim=embed_dim, loss_knobs=knobs, device=device, amp=amp,
                      channels_last=channels_last, compile=compile, num_workers=num_workers,
                      data_pipeline=data_pipeline, out=str(out),
                      data_root=str(data_root) if data_root else None, pretrained=pretrained,
                      init_from=str(_weights_file(init_from)) if init_from else None, use_ema=use_ema,
                      freeze_backbone=freeze_backbone, backbone_lr_scale=backbone_lr_scale, img_size=img_size,
                      sync_bn=sync_bn)
    reg = load_registry(registry)
    cfg.resolved(reg)  # every flag, the suite and the loss's knobs checked before torch loads
    check_model_name(model, pretrained=pretrained)

    from .core.distributed import launched_ranks, stop
    from .train.loop import train as run_train

    try:
        result = run_train(cfg, reg, force=force)
    finally:
        stop()  # leave the process group (torchrun) cleanly, also after an error
    if launched_ranks().main:  # under torchrun, rank 0 speaks for the run
        typer.echo(str(result.checkpoint))


@app.command("eval")
@_user_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (ckpt.pt) or its run directory.")],
    ood: Annotated[Optional[str], typer.Option("--ood", help="Comma-separated OOD sets, by name or group (near, far) (default: the whole suite).", show_default=False)] = None,
    detectors: Annotated[Optional[str], typer.Option("--detectors", help="Comma-separated detectors, each optionally with settings NAME:PARAM=VALUE[:PARAM=VALUE], e.g. knn:k=100,odin:temperature=1000:eps=0.0014 (default: all that apply, at their defaults); see `halo-bench detectors`.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for results.json and scores.csv.gz (default: the checkpoint's folder).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Evaluation batch size.")] = 256,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only the first N images of each split (a smoke run: the results are marked partial and stay out of a report's tables).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    amp: AmpOpt = True,
    channels_last: ChannelsLastOpt = True,
    num_workers: WorkersOpt = None,
    data_pipeline: PipelineOpt = "auto",
    data_root: Annotated[Optional[Path], typer.Option(
        "--data-root", "--data-dir", help="Folder holding the datasets (default: $HALO_BENCH_DATA, else the one the "
        "checkpoint was trained from).", show_default=False)] = None,
    tune: Annotated[bool, typer.Option("--tune", help="Also report each detector with its hyperparameters chosen by AUROC on the suite's ID-validation vs OOD-validation sets (never test data), as NAME[tuned] rows; the defaults stay the main rows.")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store forward passes in <checkpoint folder>/feature-cache (keyed by the checkpoint's hash, dataset, split and transform); --no-cache runs every pass and writes nothing.")] = True,
    registry: RegistryOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Evaluate a classifier trained elsewhere: CHECKPOINT is its weights file (state_dict, .safetensors or timm checkpoint) and this its timm model name; needs --suite.", show_default=False)] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", help="With --model: the suite to evaluate the foreign classifier on (its class count must match).", show_default=False)] = None,
    use_ema: Annotated[bool, typer.Option("--use-ema", help="With --model: take the timm checkpoint's state_dict_ema.")] = False,
    shift: ShiftOpt = None,
    severities: SeveritiesOpt = None,
) -> None:
    """Evaluate a checkpoint: ID accuracy and calibration, and OOD detection per detector.

    With --model NAME --suite S: evaluate a timm classifier trained elsewhere, as it is."""
    from .data import load_registry
    from .models.runs import checkpoint_path

    _single_process("eval")
    check_data_pipeline(data_pipeline)
    if (model is None) != (suite is None) or (use_ema and model is None):
        raise HaloBenchError("--model and --suite go together (a foreign classifier: eval FILE --model NAME "
                             "--suite S); --use-ema needs them.")
    ckpt = _weights_file(checkpoint) if model else checkpoint_path(checkpoint)
    shift_tokens, shift_severities = _shift_options(shift, severities)
    reg = load_registry(registry)
    if model is not None:
        from .models.timm_names import check_model_name

        check_model_name(model, pretrained=True)
    # Detector names and settings, OOD set names and the datasets' presence, before torch loads.
    check_eval_request(ckpt, reg, _split(ood), _split(detectors), str(data_root) if data_root else None, tune,
                       suite=suite, shift=shift_tokens, severities=shift_severities)

    from .evaluate.run import EvalConfig, evaluate, summarize

    cfg = EvalConfig(checkpoint=str(ckpt), ood=_split(ood), detectors=_split(detectors),
                     out=str(out) if out else None, device=device, batch_size=batch_size, amp=amp,
                     channels_last=channels_last,
                     data_root=str(data_root) if data_root else None, num_workers=num_workers, limit=limit,
                     model=model, suite=suite, use_ema=use_ema, cache=cache, tune=tune, data_pipeline=data_pipeline,
                     shift=shift_tokens, severities=shift_severities)
    results, path = evaluate(cfg, reg)
    typer.echo(summarize(results))
    typer.echo(str(path))


@app.command()
@_user_errors
def report(
    results: Annotated[Optional[list[Path]], typer.Argument(help="results.json files or folders to search (default: every results.json under --runs).", show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="markdown, csv, json, latex (booktabs, better value bold) or html (one self-contained file: tables and figures embedded, opens offline).")] = "markdown",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file instead of standard output.", show_default=False)] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder searched when no RESULTS are given.")] = Path("runs"),
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="The loss every other loss is compared with (a run folder's loss part, e.g. cce or cce+ls0.1; default: cce). A baseline no run has is an error that lists the losses found.", show_default=False)] = None,
    adjust: Annotated[str, typer.Option("--adjust", help="Multiple-comparisons control of the Findings: bh (Benjamini-Hochberg, false discovery rate), holm (family-wise error rate) or none; see docs/protocol.md.")] = "bh",
    include_incomplete: Annotated[bool, typer.Option("--include-incomplete", help="Also report runs whose training did not finish (labelled); by default they are left out and listed.")] = False,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Also write every figure of the HTML report to this folder, each as SVG and PDF (for a paper); drawn once for both.", show_default=False)] = None,
) -> None:
    """Findings first (the differences that survive the multiple-comparisons control), how the numbers
    were made, then every loss side by side per detector against a baseline: near/far means, paired
    deltas with intervals, mean ± std over seeds."""
    from .results import check_report_format

    check_report_format(format, adjust)  # before pandas and the renderers load
    from .core.io import atomic_write_text
    from .report.assemble import build_report
    from .report.render import render_report
    from .report.tidy import find_results, load_results

    report_ = build_report(load_results(find_results(results or [], runs)), baseline, include_incomplete, adjust)
    drawn = None
    if plots or format == "html":
        from .report.plots import (  # imports matplotlib: only when asked for
            figures,
            write_plots,
        )

        drawn = figures(report_, pdf=bool(plots))
        if plots:
            written = write_plots(drawn, plots)
            typer.echo(f"{len(written)} figure file(s) written to {plots}", err=True)
    text = render_report(report_, format, drawn)
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
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds (>= 0, no repeats); each trains one run per loss.")] = "0,1,2",
    losses: Annotated[str, typer.Option("--losses", help="Comma-separated losses, each optionally with knobs, e.g. cce,cce:label_smoothing=0.1,logitnorm,halo (see `halo-bench losses`).")] = "cce,halo",
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="The loss the report compares every other with (default: the first of --losses).", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs per run (default: the suite's recipe).", show_default=False)] = None,
    detectors: Annotated[Optional[str], typer.Option("--detectors", help="Comma-separated detectors (default: all).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the runs and the report.")] = Path("runs"),
    device: DeviceOpt = "auto",
    amp: AmpOpt = True,
    channels_last: ChannelsLastOpt = True,
    num_workers: WorkersOpt = None,
    data_pipeline: PipelineOpt = "auto",
    force: Annotated[bool, typer.Option("--force", help="Retrain runs that are already complete.")] = False,
    data_root: DataRootOpt = None,
    registry: RegistryOpt = None,
    launcher: Annotated[str, typer.Option("--launcher", help="inline: every run in this process, one after another; local or slurm: each (loss, seed) run as a submitit job (background processes here, or one SLURM job array); see docs/cluster-gpu.md.")] = "inline",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="local/slurm: follow the jobs with a progress display and write the report when they end (default: print the job ids and return).")] = False,
    max_parallel: Annotated[Optional[int], typer.Option("--max-parallel", help="local/slurm: at most this many jobs at once (default: 1 local, all on SLURM).", show_default=False)] = None,
    cluster_config: Annotated[Optional[Path], typer.Option("--cluster-config", help="local/slurm: YAML file of job settings (partition, time, gpus_per_job, cpus_per_job, mem_gb, account, max_parallel, sbatch_lines, setup, max_requeues); flags override it.", show_default=False)] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="slurm: partition to submit to.", show_default=False)] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", help="local/slurm: time limit per job, minutes or H:MM:SS (default 24:00:00 on SLURM, none locally); a job that reaches it is requeued and resumes.", show_default=False)] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option("--gpus-per-job", help="local/slurm: GPUs per job, 0 or 1 (default 1; a job is one process, more is refused: multi-GPU training runs under torchrun, docs/cluster-gpu.md).", show_default=False)] = None,
    cpus_per_job: Annotated[Optional[int], typer.Option("--cpus-per-job", help="local/slurm: CPU cores (and torch threads) per job (default: SLURM's; locally the cores divided by --max-parallel).", show_default=False)] = None,
    mem_gb: Annotated[Optional[float], typer.Option("--mem-gb", help="slurm: memory per job in GB.", show_default=False)] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="slurm: account to charge.", show_default=False)] = None,
    sbatch_line: Annotated[Optional[list[str]], typer.Option("--sbatch-line", metavar="OPTION", help="slurm: extra sbatch option, e.g. --sbatch-line constraint=a100 (repeatable).", show_default=False)] = None,
    shift: ShiftOpt = None,
    severities: SeveritiesOpt = None,
) -> None:
    """The main job: train every loss for each seed, evaluate all, write and print the report."""
    from .bench.sweep import BenchConfig, check_bench, run_bench

    _single_process("bench")
    check_data_pipeline(data_pipeline)
    shift_tokens, shift_severities = _shift_options(shift, severities)
    if shift_tokens and launcher != "inline":  # the job bookkeeping finds results by a name that knows no --shift
        raise HaloBenchError("--shift runs with --launcher inline; for cluster runs, evaluate each run "
                             "afterwards with `halo-bench eval RUN_FOLDER --shift ...`.")
    cfg = BenchConfig(model=model, suite=suite, seeds=_seeds(seeds), losses=_losses(losses), baseline=baseline,
                      epochs=epochs, detectors=_split(detectors), out=str(out), device=device, amp=amp,
                      channels_last=channels_last, num_workers=num_workers, data_pipeline=data_pipeline, force=force,
                      registry=str(registry) if registry else None,
                      data_root=str(data_root) if data_root else None, shift=shift_tokens,
                      severities=shift_severities)
    check_bench(cfg)
    cluster = {"max_parallel": max_parallel, "partition": partition, "time": time_limit, "gpus_per_job": gpus_per_job,
               "cpus_per_job": cpus_per_job, "mem_gb": mem_gb, "account": account, "sbatch_lines": sbatch_line}
    if launcher != "inline" or wait or cluster_config or any(v not in (None, []) for v in cluster.values()):
        from .bench.jobs import run_launcher

        raise typer.Exit(run_launcher(cfg, launcher, wait, cluster_config, cluster, typer.echo))
    text, path = run_bench(cfg)
    typer.echo(text)
    typer.echo(f"report written to {path}")
    typer.echo(f"HTML report (tables and figures, opens offline in a browser) written to {path.with_suffix('.html')}")


def _shift_options(shift: str | None, severities: str | None) -> tuple[list[str] | None, list[int] | None]:
    """`--shift` tokens and `--severities`, checked (severities need a shift)."""
    from .data.shift import parse_severities

    tokens = _split(shift)
    if shift is not None and not tokens:
        raise HaloBenchError("--shift names nothing; give all, a group or corruptions, e.g. --shift all.")
    if severities is not None and tokens is None:
        raise HaloBenchError("--severities selects severities of --shift; add --shift (e.g. --shift all).")
    return tokens, (parse_severities(severities) if severities is not None else None)


def _single_process(command: str) -> None:
    """`eval` and `bench` run in one process; torchrun is for `train` alone."""
    from .core.distributed import launched_ranks

    if launched_ranks().distributed:
        raise HaloBenchError(
            f"`{command}` runs in one process and is not sharded across torchrun's ranks: one GPU evaluates "
            f"CIFAR-10's test set in seconds (docs/cluster-gpu.md). Run `halo-bench {command}` without torchrun; "
            "use torchrun for `halo-bench train`.")


def _weights_file(path: Path) -> Path:
    """A weights file the user named, checked before torch loads (a run folder means its ckpt.pt)."""
    path = path.expanduser()
    if path.is_dir() and (path / "ckpt.pt").is_file():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise HaloBenchError(f"weights file {path} does not exist; give a .pth/.pth.tar/.bin/.safetensors file "
                             "or a halo-bench run folder.")
    return path.resolve()


def _losses(value: str) -> list[str]:
    items = _split(value)
    if not items:
        raise HaloBenchError("--losses names no loss; give at least one, e.g. --losses cce,halo.")
    return items


ListFormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="table (wraps at any width; one record per row where a table would cut a name), "
    "json or csv (for scripts).")]


@app.command("losses")
@_user_errors
def losses_(format: ListFormatOpt = "table") -> None:
    """List the training losses, their knobs and defaults."""
    import dataclasses

    from .core.console import Column, check_list_format, print_listing, print_records
    from .losses import LOSSES

    check_list_format(format)
    records = [{"name": spec.name, "label": spec.label, "summary": spec.summary,
                "knobs": [{"name": f.name, "default": f.default, "help": f.metadata.get("help", "")}
                          for f in dataclasses.fields(spec.knobs)]} for spec in LOSSES.values()]
    if format != "table":
        print_records(records, format)
        return
    rows = [{**r, "knobs": "\n".join(f"{k['name']} ({_knob_default(k['default'])}): {k['help']}" for k in r["knobs"])
             or "-"} for r in records]
    print_listing("losses (knobs: --loss NAME:knob=value, or the knob's own flag of `train`)",
                  [Column("name", "name", "name"), Column("label", "label", "name"),
                   Column("summary", "what it trains"), Column("knobs", "knobs (default): meaning")], rows)


@app.command()
@_user_errors
def datasets(data_root: DataRootOpt = None, registry: RegistryOpt = None,
             format: Annotated[str, typer.Option(
                 "--format", "-f", help="table (wraps at any width; one record per row where a table would "
                 "cut a name), json (datasets and suites) or csv (the datasets; for scripts).")] = "table") -> None:
    """List the registry's datasets (present or not, size, how to get them) and suites."""
    from .core.console import check_list_format, print_json, print_records
    from .data import load_registry, resolve_data_root

    check_list_format(format)
    reg = load_registry(registry)
    root = resolve_data_root(data_root)
    records, suites = _dataset_records(reg, root), _suite_records(reg)
    if format == "json":
        print_json({"data_root": str(root), "registry": str(reg.path), "datasets": records, "suites": suites})
    elif format == "csv":
        print_records(records, "csv")
    else:
        _print_datasets(reg, root, records, suites)


def _dataset_records(reg: Any, root: Path) -> list[dict[str, Any]]:
    from .data import how_to_get, presence

    records = []
    for spec in reg.datasets.values():
        found = presence(spec, root)
        present = found.status == "present"
        records.append({"name": spec.name, "aliases": list(spec.aliases), "source": spec.source,
                        "status": found.status, "size_bytes": found.size_bytes if present else None,
                        "size_complete": found.size_complete if present else None,
                        "description": spec.description,
                        "how_to_get": how_to_get(spec, root) if found.status == "missing" else None})
    return records


def _suite_records(reg: Any) -> list[dict[str, Any]]:
    return [{"name": s.name, "id": s.id, "near": list(s.near), "far": list(s.far), "shift": list(s.shift),
             "description": s.description} for s in reg.suites.values()]


def _print_datasets(reg: Any, root: Path, records: list[dict[str, Any]], suites: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from .core.console import Column, print_listing, stdout_console

    out = stdout_console()
    rows = [{"name": r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else ""), "source": r["source"],
             "status": r["status"], "description": r["description"],
             "size": _human_size(r["size_bytes"], r["size_complete"]) if r["size_bytes"] is not None else "-"}
            for r in records]
    status = Column("status", "status", "short", styles={"present": "green", "missing": "red", "in package": "dim"})
    print_listing(f"datasets under {root} (registry {reg.path})",
                  [Column("name", "name", "name"), Column("source", "source", "short"), status,
                   Column("size", "size", "short"), Column("description", "description")], rows, out)
    out.print()
    print_listing("suites (shift: the sets `eval --shift` reads, the first present)",
                  [Column("name", "name", "name"), Column("id", "ID", "name"), Column("near", "near"),
                   Column("far", "far"), Column("shift", "shift"), Column("description", "description")],
                  [{**s, "near": ", ".join(s["near"]), "far": ", ".join(s["far"]), "shift": ", ".join(s["shift"]) or "-"}
                   for s in suites], out)
    missing: dict[str, list[str]] = {}
    for r in records:
        if r["how_to_get"]:
            missing.setdefault(r["how_to_get"], []).append(r["name"])
    if missing:
        out.print()
        out.print(Text("How to get the missing datasets", style="bold"))
        for instruction, names in missing.items():
            out.print(Text(f"- {', '.join(names)}: {instruction}"), soft_wrap=True)


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
    """Fetch datasets that torchvision can download and verify; print how to get the others.

    A failed download does not stop the others; for each failure it prints the files to
    fetch by hand (URL, name, MD5) and where to put them.
    """
    import shutil

    from .core.console import console
    from .data import SOURCES, how_to_get, load_registry, presence, resolve_data_root
    from .data.sources import torchvision_files

    reg = load_registry(registry)
    root = resolve_data_root(data_root)
    specs = {spec.name: spec for spec in map(reg.dataset, names)}  # unknown names fail first
    not_fetched = []
    for spec in specs.values():
        fetch = SOURCES[spec.source].download
        if fetch is not None:
            folders = SOURCES[spec.source].locate(spec, root)
            existed = {folder: folder.exists() for folder in folders}
            console.print(f"{spec.name}: downloading into {root} (the checksums are verified)")
            try:
                fetch(spec, root)
            except Exception as exc:  # noqa: BLE001  (network, checksum, disk: report and go on)
                not_fetched.append(spec.name)
                for folder, was_there in existed.items():  # leave nothing half-made behind
                    if not was_there and folder.exists():
                        shutil.rmtree(folder, ignore_errors=True)
                reason = _strip_worker_traceback(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
                console.print(f"{spec.name}: download failed ({reason}). To get it by hand:", markup=False)
                manual = SOURCES[spec.source].files or torchvision_files
                for url, filename, md5, folder in manual(spec, root):
                    console.print(f"  {url}\n    -> {folder / filename}  (MD5 {md5})", markup=False)
                console.print(f"  then run `halo-bench download {spec.name} --data-root {root}` again: "
                              "the files are verified and unpacked without a network.", markup=False)
                continue
            console.print(f"{spec.name}: [green]ready[/]")
        elif presence(spec, root).status in ("present", "in package"):
            console.print(f"{spec.name}: [green]already present[/]")
        else:
            not_fetched.append(spec.name)
            console.print(f"{spec.name}: cannot be downloaded automatically. {how_to_get(spec, root)}",
                          markup=False)
    if not_fetched:
        console.print(f"still missing: {', '.join(not_fetched)}", markup=False)
        raise typer.Exit(code=1)


@app.command()
@_user_errors
def detectors(format: ListFormatOpt = "table") -> None:
    """List the OOD detectors, their defaults and what they need."""
    from rich.text import Text

    from .core.console import (
        Column,
        check_list_format,
        print_listing,
        print_records,
        print_wrapped,
        stdout_console,
    )
    from .detectors import DETECTORS, format_value

    check_list_format(format)
    records = [{"name": cls.name, "score": cls.summary, "reads": cls.reads, "defaults": dict(cls.defaults),
                "choices": {k: list(v) for k, v in cls.choices.items()},
                "tune_grid": {k: list(v) for k, v in cls.tune_grid.items()},
                "needs": [n for n, on in (("HALO model", cls.halo_only), ("ID-train pass", cls.needs_train),
                                          ("gradient passes", cls.needs_inputs)) if on]} for cls in DETECTORS.values()]
    if format != "table":
        print_records(records, format, ["name", "score", "reads", "defaults", "choices", "tune_grid", "needs"])
        return
    rows = [{"name": r["name"], "score": r["score"], "reads": r["reads"], "needs": ", ".join(r["needs"]) or "-",
             "defaults": ", ".join(f"{k}={format_value(v)}" + (f" (of {'|'.join(r['choices'][k])})"
                                   if k in r["choices"] else "") for k, v in r["defaults"].items()) or "-",
             "grid": "; ".join(f"{k} in {{{', '.join(f'{v:g}' for v in values)}}}"
                               for k, values in r["tune_grid"].items()) or "-"} for r in records]
    out = stdout_console()
    print_listing("detectors (score: higher = more in-distribution)",
                  [Column("name", "name", "name"), Column("reads", "reads", "short"), Column("score", "score"),
                   Column("defaults", "defaults"), Column("grid", "--tune grid"), Column("needs", "needs")], rows, out)
    print_wrapped(out, Text("Set parameters with --detectors NAME:PARAM=VALUE, e.g. knn:k=100,odin:temperature="
                            "1000:eps=0.0014,ash:variant=b; a detector with non-default settings is reported as "
                            "NAME[PARAM=VALUE]. 'penultimate' = the backbone's pooled features (OpenOOD's); "
                            "'embedding' = the layer the head reads."))


def main() -> None:
    from .core.provenance import set_command

    set_command(sys.argv[1:])
    app(prog_name="halo-bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
