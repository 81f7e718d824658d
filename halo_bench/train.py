"""The training loop, shared by both losses: one recipe, only the head differs.

A run directory holds `config.json` (the full config, seed, versions, registry
entries), `ckpt.pt` (weights, metadata and the state to resume from, rewritten
atomically after every epoch) and `metrics.jsonl` (one line per epoch).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .archs import resolve_arch
from .console import console, make_progress
from .data import LoadOptions, check_labels, default_workers, load_split, resolve_data_root
from .errors import HaloBenchError
from .features import forward_pass
from .io import atomic_write_json, atomic_write_text, package_versions, utc_now
from .models import (
    LOSSES,
    Classifier,
    build_model,
    model_meta,
    probe_input,
    read_checkpoint,
    save_checkpoint,
)
from .registry import Registry, load_registry

# Config fields that do not change what is trained, so a run may resume with others.
RUNTIME_FIELDS = {"device", "amp", "channels_last", "compile", "num_workers", "out", "data_root"}


@dataclass
class TrainConfig:
    """Everything that defines a training run. `None` recipe fields take the suite's default."""

    model: str
    loss: str = "halo"
    suite: str = "digits"
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    warmup_epochs: int | None = None
    embed_dim: int | None = None
    label_smoothing: float = 0.1
    distill: bool = True
    learn_gamma: bool = True
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    num_workers: int | None = None  # default: 0 for in-memory data, up to 8 for image files
    out: str = "runs"
    data_root: str | None = None  # default: $HALO_BENCH_DATA, else ./data

    def resolved(self, registry: Registry) -> TrainConfig:
        """A copy with every unset recipe field filled from the suite's recipe."""
        recipe = registry.suite(self.suite).recipe
        values = asdict(self)
        for key, default in recipe.items():
            if values.get(key) is None:
                values[key] = default
        if values["grad_clip"] is not None and values["grad_clip"] <= 0:
            values["grad_clip"] = None  # --grad-clip 0 turns clipping off
        resolved = TrainConfig(**values)
        resolved.check()
        return resolved

    def check(self) -> None:
        """Reject values no run can use, with the flag to fix."""
        problems = [
            (self.epochs is not None and self.epochs < 1, "--epochs must be at least 1"),
            (self.batch_size is not None and self.batch_size < 1, "--batch-size must be at least 1"),
            (self.lr is not None and self.lr <= 0, "--lr must be positive"),
            (self.weight_decay is not None and self.weight_decay < 0, "--weight-decay must be >= 0"),
            (self.warmup_epochs is not None and self.warmup_epochs < 0, "--warmup-epochs must be >= 0"),
            (not 0 <= self.label_smoothing < 1, "--label-smoothing must lie in [0, 1)"),
            (self.embed_dim is not None and self.embed_dim < 1, "--embed-dim must be at least 1"),
            (self.num_workers is not None and self.num_workers < 0, "--num-workers must be >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise HaloBenchError(f"{message}.")

    @property
    def run_name(self) -> str:
        return f"{self.suite}-{self.model}-{self.loss}-s{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a checkpoint to be resumed by this config."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME_FIELDS}


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    epochs_run: int
    final: dict[str, float]
    skipped: bool = False


class TrainingDiverged(HaloBenchError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HaloBenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HaloBenchError(f"--device {name} was asked for, but this torch sees no CUDA GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HaloBenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) visible.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HaloBenchError("--device mps was asked for, but this torch sees no Apple GPU.")
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 autocast on GPUs that have it, fp16 on older ones, none on the CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norm scales and scalars (HALO's temperature), as timm does."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero, per optimiser step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def evaluate_accuracy(model: Classifier, dataset: Dataset, device: torch.device, dtype: torch.dtype | None,
                      batch_size: int, workers: int) -> dict[str, float]:
    """Test accuracy and NLL after an epoch (monitoring only: the final weights are kept)."""
    out = forward_pass(model, dataset, device, batch_size, dtype, "test", workers, show_progress=False)
    k = model.num_classes
    return {
        "test_acc": 100.0 * int((out.logits[:, :k].argmax(dim=1) == out.labels).sum()) / len(out),
        "test_nll": float(torch.nn.functional.cross_entropy(out.logits, out.labels)),
    }


def train(cfg: TrainConfig, registry: Registry | None = None, force: bool = False,
          on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or resume, or skip if already complete) the run `cfg` describes."""
    registry = registry or load_registry()
    if cfg.loss not in LOSSES:
        raise HaloBenchError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}.")
    cfg = cfg.resolved(registry)
    suite = registry.suite(cfg.suite)
    id_spec = registry.dataset(suite.id)
    run_dir = Path(cfg.out) / cfg.run_name
    ckpt_path = run_dir / "ckpt.pt"

    resume_state = None
    if ckpt_path.exists() and not force:
        state = read_checkpoint(ckpt_path)
        saved = state["meta"].get("train_config", {})
        if {k: v for k, v in saved.items() if k not in RUNTIME_FIELDS} != cfg.identity():
            raise HaloBenchError(
                f"{run_dir} holds a run with a different configuration; pass --force to "
                "overwrite it or --out to train elsewhere."
            )
        if state["meta"].get("complete"):
            console.print(f"[dim]{cfg.run_name}: already trained ({ckpt_path}); --force retrains.[/]")
            return TrainResult(run_dir, ckpt_path, 0, state["meta"].get("final", {}), skipped=True)
        resume_state = state

    device = resolve_device(cfg.device)
    dtype = amp_dtype(device, cfg.amp)
    channels = suite.data_config["input_size"][0]
    num_classes = len(id_spec.classes or ())
    head_kwargs: dict[str, Any] = {}
    if cfg.loss == "halo":
        head_kwargs = {"label_smoothing": cfg.label_smoothing, "distill": cfg.distill,
                       "learn_gamma": cfg.learn_gamma}
    arch = resolve_arch(cfg.model, suite.arch_variant)
    model = build_model(arch, cfg.loss, num_classes, channels, cfg.embed_dim, cfg.seed, head_kwargs)
    probe_input(model, suite.data_config["input_size"], arch)
    # Same data order and dropout stream for both losses of a seed, whatever the head drew.
    torch.manual_seed(cfg.seed)
    loader_gen = torch.Generator().manual_seed(cfg.seed)

    data_root = resolve_data_root(cfg.data_root)
    train_ds = load_split(id_spec, "train", suite.data_config, LoadOptions(data_root, suite.train_augment))
    test_ds = load_split(id_spec, "test", suite.data_config, LoadOptions(data_root))
    for dataset in (train_ds, test_ds):
        check_labels(id_spec, dataset, num_classes)
    assert cfg.batch_size is not None and cfg.epochs is not None and cfg.lr is not None
    drop_last = len(train_ds) >= 2 * cfg.batch_size  # avoids a tiny last batch in BatchNorm
    workers = default_workers(id_spec, cfg.num_workers)
    # No persistent workers: each epoch then draws its worker seeds from loader_gen,
    # so a resumed run sees the same augmentations as an uninterrupted one.
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
                              drop_last=drop_last, num_workers=workers, pin_memory=device.type == "cuda")

    model.to(device)
    memory_format = torch.channels_last if cfg.channels_last and device.type == "cuda" else None
    if memory_format is not None:
        model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay or 0.0), lr=cfg.lr,
                                momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov and cfg.momentum))
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.epochs * steps_per_epoch, (cfg.warmup_epochs or 0) * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    backbone = torch.compile(model.backbone) if cfg.compile else model.backbone

    meta = {
        "train_config": asdict(cfg),
        "run": cfg.run_name,
        "model": model_meta(model, cfg.model, cfg.loss, channels, arch),
        "suite": suite.to_dict(),
        "id_dataset": id_spec.to_dict(),
        "classes": list(id_spec.classes or ()),
        "data_config": dict(suite.data_config),
        "data_root": str(data_root),
        "train_augment": list(suite.train_augment),
        "registry": {"path": str(registry.path), "sha256": registry.sha256},
        "versions": package_versions(),
        "device": str(device),
        "amp_dtype": str(dtype).replace("torch.", "") if dtype else None,
        "created": utc_now(),
        "complete": False,
    }
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        ts = resume_state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if ts["scaler"] and scaler.is_enabled():  # empty unless the run used fp16
            scaler.load_state_dict(ts["scaler"])
        loader_gen.set_state(ts["loader_rng"])
        torch.set_rng_state(ts["torch_rng"])
        if ts.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(ts["cuda_rng"])
        history = list(ts["history"])
        start_epoch = ts["epoch"]
        meta["created"] = resume_state["meta"].get("created", meta["created"])
        console.print(f"{cfg.run_name}: resuming after epoch {start_epoch}/{cfg.epochs}")
    else:
        if force and run_dir.exists():  # only now that the model and data are known to build
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {k: v for k, v in meta.items() if k != "complete"})

    with make_progress() as progress:
        task = progress.add_task(f"train {cfg.run_name}", total=cfg.epochs * steps_per_epoch,
                                 completed=start_epoch * steps_per_epoch, status="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(train_loader):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if memory_format is not None:
                    x = x.contiguous(memory_format=memory_format)
                try:
                    loss, hits = train_step(model, backbone, x, y, optimizer, scaler, cfg.grad_clip, dtype)
                except NonFiniteStep as exc:
                    raise _diverged(cfg, run_dir, epoch, step, str(exc)) from None
                scheduler.step()
                correct += hits
                loss_sum += loss * len(y)
                seen += len(y)
                progress.update(task, advance=1, status=f"epoch {epoch + 1}/{cfg.epochs}")
            seconds = time.perf_counter() - started
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": float(loss_sum) / seen,
                "train_acc": 100.0 * float(correct) / seen,
                **evaluate_accuracy(model, test_ds, device, dtype, max(256, cfg.batch_size), workers),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images_per_second": round(seen / seconds, 1),
            }
            if cfg.loss == "halo":
                row["gamma"] = float(model.head.gamma.detach())
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                raise _diverged(cfg, run_dir, epoch, steps_per_epoch - 1, "non-finite weights")
            history.append(row)
            done = epoch + 1 == cfg.epochs
            meta.update(complete=done, epochs_done=epoch + 1, final=row)
            train_state = {
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "loader_rng": loader_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "history": history,
            }
            # A finished run needs no optimiser state: that halves the file.
            save_checkpoint(ckpt_path, model, meta, None if done else train_state)
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            gamma = f" gamma {row['gamma']:.2f}" if "gamma" in row else ""
            progress.console.print(
                f"{cfg.run_name} epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f} "
                f"train {row['train_acc']:.1f}% test {row['test_acc']:.1f}%{gamma} "
                f"({row['images_per_second']:.0f} img/s)"
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    return TrainResult(run_dir, ckpt_path, cfg.epochs - start_epoch, history[-1] if history else {})


MIN_LOSS_SCALE = 2.0**-8  # from 2**16, 24 consecutive skipped fp16 steps


class NonFiniteStep(Exception):
    """A step produced a NaN/inf loss or gradient; the optimiser did not step."""


def train_step(model: Classifier, backbone: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, grad_clip: float | None,
               dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step under autocast; returns the detached loss and the number correct.

    Checks the loss and the gradient norm before the step, so a divergence never
    reaches the weights (fp16's scaler skips overflowing steps itself, and a scale that
    collapses counts as divergence).
    """
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        z = model.embed(backbone(x))
        loss = model.head.loss(z, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    finite = torch.isfinite(loss.detach()) & (torch.isfinite(norm) | scaler.is_enabled())
    if not finite.item():  # one host sync per step
        raise NonFiniteStep(f"loss = {float(loss.detach())}, gradient norm = {float(norm)}")
    scaler.step(optimizer)
    scaler.update()
    # fp16 skips non-finite steps and halves its scale; a collapsed scale means every step is.
    if scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
        raise NonFiniteStep(f"fp16 loss scale fell to {scaler.get_scale():g}: the gradients stay non-finite")
    with torch.no_grad():  # outside autocast: the head reads its own float32 weights
        logits = model.head(z.detach().float())
        correct = (logits[:, : model.num_classes].argmax(dim=1) == y).sum()
    return loss.detach(), correct


def _diverged(cfg: TrainConfig, run_dir: Path, epoch: int, step: int, value: str) -> TrainingDiverged:
    kept = (f"the last good checkpoint (epoch {epoch}) is kept at {run_dir / 'ckpt.pt'}"
            if epoch > 0 else "no checkpoint was written (it diverged in the first epoch)")
    return TrainingDiverged(
        f"{cfg.run_name}: training diverged at epoch {epoch + 1}, step {step + 1} ({value}); "
        f"{kept}. Lower --lr or set --grad-clip (the suite default is {cfg.grad_clip})."
    )
