"""The training loop: find a run to resume, build it (`setup`), train its epochs (`step`),
checkpoint each one.

A run directory holds `config.json` (the full config, seed, versions, registry
entries), `ckpt.pt` (weights, metadata and the state to resume from, rewritten
atomically after every epoch, with a content digest) and `metrics.jsonl` (one line per
epoch, written just before the checkpoint). A run folder is locked while one process
trains it. Under torchrun the same loop trains DistributedDataParallel replicas
(`halo_bench.core.distributed`)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..core import distributed
from ..core.console import console, make_progress
from ..core.devices import dtype_name, environment
from ..core.errors import HaloBenchError
from ..core.io import (
    LOCK_FILE,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    utc_now,
)
from ..data.device import DeviceBatches, derived_seed
from ..data.registry import Registry
from ..features.passes import forward_pass
from ..losses import get_loss
from ..models.checkpoint import read_checkpoint, save_checkpoint
from ..models.classifier import Classifier, model_meta
from .config import TrainConfig, saved_identity
from .setup import Optimisation, Setup, build, make_optimisation
from .step import DivergenceWatch, TrainForward, TrainingDiverged, train_step


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    epochs_run: int
    final: dict[str, float]
    skipped: bool = False


def find_resumable(cfg: TrainConfig, ckpt_path: Path, force: bool) -> tuple[dict[str, Any] | None, bool]:
    """(checkpoint state to resume from, whether the run is already complete).

    A checkpoint of another configuration is refused unless `force` (which retrains).
    """
    if force or not ckpt_path.exists():
        return None, False
    state = read_checkpoint(ckpt_path)
    if saved_identity(state["meta"].get("train_config", {})) != cfg.identity():
        raise HaloBenchError(
            f"{ckpt_path.parent} holds a run with a different configuration; pass --force to "
            "overwrite it or --out to train elsewhere."
        )
    return state, bool(state["meta"].get("complete"))


def run_meta(cfg: TrainConfig, setup: Setup, registry: Registry) -> dict[str, Any]:
    """What the checkpoint and config.json say about the run (plain data only)."""
    id_spec = registry.dataset(setup.suite.id)
    spec = get_loss(cfg.loss)
    data_config = setup.data_config or dict(setup.suite.data_config)
    channels = data_config["input_size"][0]
    report = getattr(setup.model, "weights_report", None)
    return {
        "train_config": cfg.record(),
        "run": cfg.run_name,
        "loss": {"name": spec.name, "label": spec.display(cfg.loss_knobs), "tag": cfg.loss_tag,
                 "knobs": dict(cfg.loss_knobs), "changed": spec.changed(cfg.loss_knobs)},
        "model": model_meta(setup.model, cfg.model, cfg.loss, channels, setup.arch),
        "suite": setup.suite.to_dict(),
        "id_dataset": id_spec.to_dict(),
        "classes": list(id_spec.classes or ()),
        "data_config": dict(data_config),
        "weights": report.to_dict() if report is not None else None,
        "data_root": str(setup.data_root),
        "train_augment": list(setup.suite.train_augment),
        "registry": {"path": str(registry.path), "sha256": registry.sha256},
        "versions": environment(setup.device),
        "device": str(setup.device),
        "amp_dtype": dtype_name(setup.dtype),
        "data_pipeline": setup.pipeline,
        "steps_per_epoch": len(setup.loader),
        "world_size": setup.ranks.world_size,
        "created": utc_now(),
        "complete": False,
    }


def restore(state: dict[str, Any], setup: Setup, opt: Optimisation) -> tuple[int, list[dict[str, Any]]]:
    """Load weights, optimiser, schedule, scaler and RNG states; returns (epochs done, history)."""
    setup.model.load_state_dict(state["model"])
    ts = state["train_state"]
    opt.optimizer.load_state_dict(ts["optimizer"])
    opt.scheduler.load_state_dict(ts["scheduler"])
    if ts["scaler"] and opt.scaler.is_enabled():  # empty unless the run used fp16
        opt.scaler.load_state_dict(ts["scaler"])
    setup.loader_gen.set_state(ts["loader_rng"])
    torch.set_rng_state(ts["torch_rng"])
    restore_cuda_rng(ts.get("cuda_rng"), state["meta"].get("device"), setup.device)
    return int(ts["epoch"]), list(ts["history"])


def restore_cuda_rng(saved: Any, saved_device: str | None, device: torch.device) -> None:
    """Set this process's GPU generator from the checkpoint's, and no other GPU's.

    A checkpoint holds the state of the one GPU its writer trained on; older ones hold
    one state per GPU the writer could see (8 from an 8-GPU job), which a job with fewer
    GPUs (a requeue) cannot set. Under torchrun each rank's streams are re-derived from
    (seed, epoch, rank) anyway, so only a one-process run needs the saved state.
    """
    if saved is None or device.type != "cuda":
        return
    if isinstance(saved, (list, tuple)):  # one state per visible GPU: take the writer's own
        writer = torch.device(saved_device) if saved_device and saved_device.startswith("cuda") else None
        index = writer.index if writer is not None and writer.index is not None else 0
        if index >= len(saved):
            return
        saved = saved[index]
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index < torch.cuda.device_count():
        torch.cuda.set_rng_state(saved, index)


def train(cfg: TrainConfig, registry: Registry | None = None, force: bool = False,
          on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or resume, or skip if already complete) the run `cfg` describes."""
    if registry is None:
        from ..data import load_registry

        registry = load_registry()
    cfg = cfg.resolved(registry)
    run_dir = Path(cfg.out) / cfg.run_name
    # One writer per run folder (rank 0 writes for all ranks): a second `train` of the same run
    # is refused while this one lives; a lock left by a killed process is taken over.
    lock = folder_lock(run_dir, f"train {cfg.run_name}") if distributed.launched_ranks().main else nullcontext()
    with lock:
        return _train(cfg, registry, run_dir, force, on_epoch_end)


def _train(cfg: TrainConfig, registry: Registry, run_dir: Path, force: bool,
           on_epoch_end: Callable[[int], None] | None) -> TrainResult:
    ckpt_path = run_dir / "ckpt.pt"
    resume_state, complete = find_resumable(cfg, ckpt_path, force)
    if complete:
        assert resume_state is not None
        console.print(f"[dim]{cfg.run_name}: already trained ({ckpt_path}); --force retrains.[/]")
        return TrainResult(run_dir, ckpt_path, 0, resume_state["meta"].get("final", {}), skipped=True)

    setup = build(cfg, registry)
    opt = make_optimisation(cfg, setup)
    forward = step_module(cfg, setup)
    meta = run_meta(cfg, setup, registry)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume_state is not None:
        start_epoch, history = restore(resume_state, setup, opt)
        meta["created"] = resume_state["meta"].get("created", meta["created"])
        console.print(f"{cfg.run_name}: resuming after epoch {start_epoch}/{cfg.epochs}")
    elif setup.ranks.main:  # rank 0 alone writes the run folder
        if force:  # only now that the model and data are known to build; the lock we hold stays
            _empty_folder(run_dir, keep=LOCK_FILE)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {k: v for k, v in meta.items() if k != "complete"})

    assert cfg.epochs is not None and cfg.batch_size is not None
    with make_progress() as progress:
        task = progress.add_task(f"train {cfg.run_name}", total=cfg.epochs * opt.steps_per_epoch,
                                 completed=start_epoch * opt.steps_per_epoch, unit="steps")
        for epoch in range(start_epoch, cfg.epochs):
            def advance(epoch: int = epoch) -> None:
                progress.update(task, advance=1, status=f"epoch {epoch + 1}/{cfg.epochs}")

            row = train_epoch(cfg, setup, opt, forward, epoch, run_dir, advance)
            history.append(row)
            if setup.ranks.main:
                record_epoch(cfg, setup, opt, meta, history, ckpt_path)
                progress.console.print(_epoch_line(cfg, row))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    if setup.ranks.distributed:
        check_replicas(cfg, setup)
    return TrainResult(run_dir, ckpt_path, cfg.epochs - start_epoch, history[-1] if history else {})


def step_module(cfg: TrainConfig, setup: Setup) -> nn.Module:
    """The module one training step calls: compiled backbone if asked, DDP-wrapped under torchrun."""
    backbone = setup.model.backbone if not setup.frozen else nn.Identity()  # frozen: cached features
    backbone = torch.compile(backbone) if cfg.compile and not setup.frozen else backbone
    forward: nn.Module = TrainForward(setup.model, backbone)
    if setup.ranks.distributed:
        forward = DistributedDataParallel(forward, device_ids=[setup.device.index] if setup.device.type == "cuda"
                                          else None)
    return forward


def check_replicas(cfg: TrainConfig, setup: Setup) -> None:
    """After DDP training every rank must hold rank 0's weights and buffers, exactly."""
    tensors = [t for t in setup.model.state_dict().values() if t.is_floating_point()]
    drift = distributed.replica_drift(tensors)
    if drift != 0.0:
        raise HaloBenchError(f"{cfg.run_name}: the {setup.ranks.world_size} replicas' weights differ after "
                             f"training (max |difference| {drift:g}); the checkpoint holds rank 0's.")
    console.print(f"{cfg.run_name}: weights identical on all {setup.ranks.world_size} ranks", markup=False)


def train_epoch(cfg: TrainConfig, setup: Setup, opt: Optimisation, forward: nn.Module, epoch: int,
                run_dir: Path, advance: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """One pass over the training data, then the monitoring test pass; returns the epoch's row.

    Nothing in the loop waits for the device except the divergence check every
    `CHECK_EVERY` steps; the loss and accuracy sums stay on the device until the end.
    """
    from ..models.finetune import set_train_mode

    model = setup.model
    set_train_mode(model, setup.frozen)
    if setup.ranks.distributed:
        # Each rank its own dropout and DataLoader-augmentation streams, from (seed, epoch, rank):
        # distinct across ranks, and a resume needs no per-rank state (only rank 0's is saved).
        stream = derived_seed(cfg.seed, epoch, setup.ranks.rank)
        torch.manual_seed(stream)
        setup.loader_gen.manual_seed(stream)
    if isinstance(setup.loader, DeviceBatches):
        setup.loader.set_epoch(epoch)
    elif isinstance(getattr(setup.loader, "sampler", None), DistributedSampler):
        setup.loader.sampler.set_epoch(epoch)
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=setup.device)
    loss_seen = torch.zeros((), device=setup.device)  # samples of the steps with a finite loss (fp16 overflows)
    correct = torch.zeros((), device=setup.device, dtype=torch.long)
    watch = DivergenceWatch(setup.device)
    seen = 0

    def check() -> None:
        problem = watch.problem(opt.scaler)
        if problem is not None:
            raise _diverged(cfg, run_dir, epoch, *problem)

    for step, (x, y) in enumerate(setup.loader):
        x, y = x.to(setup.device, non_blocking=True), y.to(setup.device, non_blocking=True)
        if setup.memory_format is not None and not setup.frozen:
            x = x.contiguous(memory_format=setup.memory_format)
        outcome = train_step(forward, x, y, opt.optimizer, opt.scaler, cfg.grad_clip, setup.dtype)
        watch.observe(outcome)
        if watch.due(step):
            check()
        opt.scheduler.step()
        correct += outcome.correct
        finite_loss = torch.isfinite(outcome.loss)
        loss_sum += torch.where(finite_loss, outcome.loss.float() * len(y), 0.0)
        loss_seen += finite_loss * len(y)
        seen += len(y)
        advance()
    check()
    totals = torch.stack([loss_sum, loss_seen, correct.float(), torch.tensor(float(seen), device=setup.device)])
    distributed.all_sum(totals)
    distributed.share_buffers(model)  # rank 0's BatchNorm statistics everywhere, as DDP's next forward would
    loss_total, loss_count, correct_total, seen_total = totals.tolist()
    seconds = time.perf_counter() - started  # the sync above waited for the epoch's last step
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):
        raise _diverged(cfg, run_dir, epoch, opt.steps_per_epoch - 1, "non-finite weights")
    monitor = {}
    if setup.ranks.main:  # the other ranks go on to the next epoch's first all-reduce and wait there
        monitor = evaluate_accuracy(setup.eval_model or model, setup.test_data, setup.device, setup.dtype,
                                    cfg.eval_batch_size, setup.workers, setup.memory_format)
    return {
        "epoch": epoch + 1,
        "loss": loss_total / loss_count if loss_count else math.nan,
        "train_acc": 100.0 * correct_total / seen_total,
        **monitor,
        "lr": max(group["lr"] for group in opt.optimizer.param_groups),
        "seconds": round(seconds, 3),
        "images_per_second": round(seen_total / seconds, 1),
        **model.head.diagnostics(),
    }


def record_epoch(cfg: TrainConfig, setup: Setup, opt: Optimisation, meta: dict[str, Any],
                 history: list[dict[str, Any]], ckpt_path: Path) -> None:
    """Checkpoint (atomically) with the state to resume from, and rewrite metrics.jsonl."""
    row = history[-1]
    done = row["epoch"] == cfg.epochs
    meta.update(complete=done, epochs_done=row["epoch"], final=row)
    train_state = {
        "epoch": row["epoch"],
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict(),
        "loader_rng": setup.loader_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(setup.device) if setup.device.type == "cuda" else None,  # its GPU's
        "history": history,
    }
    # metrics.jsonl first: a kill before the checkpoint replaces it leaves a line for an epoch the
    # resumed run trains again (and rewrites), never a complete run missing its last line.
    atomic_write_text(ckpt_path.parent / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    # A finished run needs no optimiser state: that halves the file.
    save_checkpoint(ckpt_path, setup.model, meta, None if done else train_state)


def _empty_folder(folder: Path, keep: str) -> None:
    """Remove everything in `folder` but the file `keep` (--force starts a run afresh)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _epoch_line(cfg: TrainConfig, row: dict[str, Any]) -> str:
    standard = {"epoch", "loss", "train_acc", "test_acc", "test_nll", "lr", "seconds", "images_per_second"}
    extra = "".join(f" {k} {v:.3g}" for k, v in row.items() if k not in standard)
    return (f"{cfg.run_name} epoch {row['epoch']}/{cfg.epochs}: loss {row['loss']:.4f} "
            f"train {row['train_acc']:.1f}% test {row['test_acc']:.1f}%{extra} "
            f"({row['images_per_second']:.0f} img/s)")


def evaluate_accuracy(model: Classifier, dataset: Any, device: torch.device, dtype: torch.dtype | None,
                      batch_size: int, workers: int,
                      memory_format: torch.memory_format | None = None) -> dict[str, float]:
    """Test accuracy and NLL after an epoch (monitoring only: the final weights are kept)."""
    out = forward_pass(model, dataset, device, batch_size, dtype, "test", workers, show_progress=False,
                       memory_format=memory_format)
    k = model.num_classes
    return {
        "test_acc": 100.0 * int((out.logits[:, :k].argmax(dim=1) == out.labels).sum()) / len(out),
        "test_nll": float(torch.nn.functional.cross_entropy(out.logits, out.labels)),
    }


def _diverged(cfg: TrainConfig, run_dir: Path, epoch: int, step: int, value: str) -> TrainingDiverged:
    kept = (f"the last good checkpoint (epoch {epoch}) is kept at {run_dir / 'ckpt.pt'}"
            if epoch > 0 else "no checkpoint was written (it diverged in the first epoch)")
    return TrainingDiverged(
        f"{cfg.run_name}: training diverged at epoch {epoch + 1}, step {step + 1} ({value}); "
        f"{kept}. Lower --lr or set --grad-clip (the suite default is {cfg.grad_clip})."
    )
