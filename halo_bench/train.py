"""The training loop, shared by every loss: one recipe, only the head differs.

A run directory holds `config.json` (the full config, seed, versions, registry
entries), `ckpt.pt` (weights, metadata and the state to resume from, rewritten
atomically after every epoch) and `metrics.jsonl` (one line per epoch).

`train()` strings together its seams, each a function of its own: find a run to
resume, build the model and data, make the optimiser, run one epoch, record it.

The steady-state loop never waits for the device: a non-finite loss or gradient is
noted on the device (`DivergenceWatch`) and read every `CHECK_EVERY` steps and at
each epoch's end, always before a checkpoint is written. Under torchrun the same
loop trains DistributedDataParallel replicas (`halo_bench.distributed`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed
from .archs import resolve_arch
from .config import TrainConfig, saved_identity
from .console import console, make_progress
from .data import LoadOptions, check_labels, default_workers, load_split, resolve_data_root
from .data.device import DeviceBatches, choose_pipeline, derived_seed
from .devices import amp_dtype, channels_last_format, dtype_name, environment, resolve_device
from .errors import HaloBenchError
from .features import forward_pass
from .io import LOCK_FILE, atomic_write_json, atomic_write_text, folder_lock, utc_now
from .losses import get_loss
from .models import Classifier, build_model, model_meta, probe_input, read_checkpoint, save_checkpoint
from .registry import Registry, SuiteSpec

__all__ = ["DivergenceWatch", "StepOutcome", "TrainConfig", "TrainForward", "TrainResult", "TrainingDiverged",
           "train", "train_step"]

CHECK_EVERY = 50  # steps between the host's looks at the device-side divergence flag


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    epochs_run: int
    final: dict[str, float]
    skipped: bool = False


class TrainingDiverged(HaloBenchError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainForward(nn.Module):
    """One training forward: backbone, embedding and the head's loss inside one module's
    forward, so DistributedDataParallel sees (and synchronises) the whole step.

    `backbone` is the model's own, or its compiled wrapper, or an identity when the
    inputs are cached backbone features.
    """

    def __init__(self, model: Classifier, backbone: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.backbone = backbone

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.model.embed(self.backbone(x))
        return self.model.head.loss(z, y), z


@dataclass
class StepOutcome:
    """What one step leaves on the device; nothing here has been read by the host."""

    loss: torch.Tensor
    correct: torch.Tensor
    finite: torch.Tensor  # loss and gradient norm finite
    grad_norm: torch.Tensor
    scaled: bool = False  # fp16's GradScaler stepped: it skipped a non-finite step itself


class DivergenceWatch:
    """Notes, on the device, the first step of an epoch whose loss or gradient is not
    finite; the host reads it (one sync) every `every` steps and at the epoch's end.

    Under fp16's GradScaler a non-finite step is an overflow the scaler skips (halving
    its scale), not a divergence; only a collapsing scale is (`problem`).

    A bad step has already updated the weights by the time the host knows, but the
    weights only reach disk in the checkpoint after the epoch-end check, so the last
    checkpoint on disk is always a good one.
    """

    def __init__(self, device: torch.device, every: int | None = None) -> None:
        self.every = every or CHECK_EVERY
        self.found = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.zeros(3, device=device)  # step, loss, gradient norm
        self.step = torch.zeros((), device=device)

    def observe(self, outcome: StepOutcome) -> None:
        if not outcome.scaled:
            bad = ~outcome.finite
            values = torch.stack([self.step, outcome.loss.float(), outcome.grad_norm.float()])
            self.first = torch.where(bad & ~self.found, values, self.first)
            self.found |= bad
        self.step += 1

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def problem(self, scaler: torch.amp.GradScaler) -> tuple[int, str] | None:
        """(step, what went wrong) if any rank saw a non-finite step; one host sync."""
        if bool(distributed.any_rank(self.found)):
            step, loss, norm = self.first.tolist()
            return int(step), f"loss = {loss}, gradient norm = {norm}"
        # fp16 skips non-finite steps and halves its scale; a collapsed scale means every step is.
        if scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
            return int(self.step) - 1, (f"fp16 loss scale fell to {scaler.get_scale():g}: the gradients stay "
                                        "non-finite")
        return None


@dataclass
class Setup:
    """Everything a run trains with, built once: model, data, device, precision."""

    model: Classifier
    arch: str
    suite: SuiteSpec
    train_data: Dataset
    test_data: Any  # a Dataset, or DeviceBatches when served from the device
    loader: Any  # DataLoader or DeviceBatches: (x, y) batches of one epoch
    loader_gen: torch.Generator
    device: torch.device
    dtype: torch.dtype | None
    memory_format: torch.memory_format | None
    workers: int
    data_root: Path
    data_config: dict[str, Any] = field(default_factory=dict)  # the model's own, or the suite's
    frozen: bool = False  # --freeze-backbone: `loader` and `test_data` hold cached backbone features
    eval_model: Classifier | None = None  # what reads `test_data` (the head alone when frozen)
    pipeline: str = "loader"  # what serves the training batches: "device" or "loader"
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps_per_epoch: int


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


def build(cfg: TrainConfig, registry: Registry) -> Setup:
    """The model (from `cfg.seed`), the ID train/test data and the train loader."""
    suite = registry.suite(cfg.suite)
    id_spec = registry.dataset(suite.id)
    ranks = distributed.launched_ranks()
    if ranks.distributed and cfg.freeze_backbone:
        raise HaloBenchError("--freeze-backbone trains the head on cached features in one process (seconds); "
                             "run it without torchrun.")
    device = resolve_device(cfg.device)
    sync_bn_note = distributed.check_sync_bn(ranks, device) if cfg.sync_bn else None
    device = distributed.start(ranks, device)
    if not ranks.main:
        console.quiet = True  # rank 0 speaks for the run
    if sync_bn_note:
        console.print(sync_bn_note, markup=False)
    from . import finetune

    channels = suite.data_config["input_size"][0]
    num_classes = len(id_spec.classes or ())
    arch = cfg.model if cfg.loaded_weights else resolve_arch(cfg.model, suite.arch_variant)
    if cfg.pretrained:  # the model keeps its own input channels; the data is adapted to them
        from .weights import pretrained_channels

        channels = pretrained_channels(arch)
    model = build_model(arch, cfg.loss, num_classes, channels, cfg.embed_dim, cfg.seed, cfg.loss_knobs,
                        pretrained=cfg.pretrained, init_from=cfg.init_from, use_ema=cfg.use_ema)
    report = getattr(model, "weights_report", None)
    if report is not None:
        console.print(report.summary(), markup=False)
    data_config = finetune.model_data_config(suite.data_config, model.backbone, cfg.pretrained, cfg.img_size)
    data_config["input_size"][0] = channels
    probe_input(model, data_config["input_size"], arch)
    if cfg.freeze_backbone:
        finetune.freeze_backbone(model)
    if cfg.sync_bn and sync_bn_note is None:
        distributed.sync_batchnorm(model)
    # Same data order and dropout stream for every loss of a seed, whatever the head drew.
    torch.manual_seed(cfg.seed)
    loader_gen = torch.Generator().manual_seed(cfg.seed)

    data_root = resolve_data_root(cfg.data_root)
    augment = () if cfg.freeze_backbone else suite.train_augment  # cached features: no augmentation
    train_data = load_split(id_spec, "train", data_config, LoadOptions(data_root, augment))
    test_data = load_split(id_spec, "test", data_config, LoadOptions(data_root))
    for dataset in (train_data, test_data):
        check_labels(id_spec, dataset, num_classes)
    assert cfg.batch_size is not None
    per_rank = distributed.rank_batch_size(cfg.batch_size, ranks.world_size)
    # Every rank takes an equal slice of every batch; one process avoids a tiny last batch in BatchNorm.
    drop_last = ranks.distributed or len(train_data) >= 2 * cfg.batch_size
    workers = default_workers(id_spec, cfg.num_workers)
    memory_format = channels_last_format(device, cfg.channels_last)
    array = None if cfg.freeze_backbone else choose_pipeline(cfg.data_pipeline, train_data, data_config,
                                                             augment, device, train=True)
    if array is not None:  # uint8 images on the device, augmented there (data/device.py)
        loader = DeviceBatches(array, device, cfg.batch_size, data_config, augment=augment, shuffle=True,
                               seed=cfg.seed, drop_last=drop_last, rank=ranks.rank, world_size=ranks.world_size,
                               memory_format=memory_format)
    elif ranks.distributed:  # each rank its shard of a (seed, epoch) permutation
        sampler: DistributedSampler[Any] = DistributedSampler(
            train_data, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        loader = DataLoader(train_data, batch_size=per_rank, sampler=sampler,
                            generator=loader_gen, drop_last=True, num_workers=workers,
                            pin_memory=device.type == "cuda")
    else:
        # No persistent workers: each epoch then draws its worker seeds from loader_gen,
        # so a resumed run sees the same augmentations as an uninterrupted one.
        loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
                            drop_last=drop_last, num_workers=workers, pin_memory=device.type == "cuda")
    test_array = None if cfg.freeze_backbone else choose_pipeline(cfg.data_pipeline, test_data, data_config, (),
                                                                  device)
    if test_array is not None:
        # channels-last, where used, is applied by forward_pass (evaluate_accuracy passes it)
        test_data = DeviceBatches(test_array, device, cfg.eval_batch_size, data_config)
    model.to(device)
    if memory_format is not None:
        model.to(memory_format=memory_format)
    dtype = amp_dtype(device, cfg.amp)
    eval_model = None
    if cfg.freeze_backbone:  # the frozen backbone runs once per split; the head trains on its output
        started = time.perf_counter()
        train_data = finetune.backbone_features(model.backbone, train_data, device, cfg.eval_batch_size,
                                                dtype, workers)
        test_data = finetune.backbone_features(model.backbone, test_data, device, cfg.eval_batch_size,
                                               dtype, workers)
        loader = finetune.cached_loader(train_data, cfg.batch_size, loader_gen, drop_last)
        eval_model = finetune.HeadOnly(model)
        console.print(f"backbone features cached: {len(train_data)} train, {len(test_data)} test "
                      f"({time.perf_counter() - started:.1f} s)", markup=False)
    return Setup(model, arch, suite, train_data, test_data, loader, loader_gen, device,
                 dtype, memory_format, workers, data_root, data_config, cfg.freeze_backbone, eval_model,
                 "device" if array is not None else "loader", ranks)


def make_optimisation(cfg: TrainConfig, setup: Setup) -> Optimisation:
    """SGD over the trainable parameters, warm-up + cosine per step, fp16's loss scaler."""
    assert cfg.epochs is not None and cfg.lr is not None
    from .finetune import param_groups as scaled_groups

    scale = 1.0 if cfg.backbone_lr_scale is None else cfg.backbone_lr_scale
    groups = (param_groups(setup.model, cfg.weight_decay or 0.0) if scale == 1.0
              else scaled_groups(setup.model, cfg.weight_decay or 0.0, scale, cfg.lr))
    optimizer = torch.optim.SGD(groups, lr=cfg.lr,
                                momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov and cfg.momentum))
    steps = len(setup.loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.epochs * steps, (cfg.warmup_epochs or 0) * steps))
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.dtype == torch.float16)
    return Optimisation(optimizer, scheduler, scaler, steps)


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
        from .data import load_registry

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
                                 completed=start_epoch * opt.steps_per_epoch, status="")
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
    from .finetune import set_train_mode

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


MIN_LOSS_SCALE = 2.0**-8  # from 2**16, 24 consecutive skipped fp16 steps


def train_step(forward: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, grad_clip: float | None, dtype: torch.dtype | None) -> StepOutcome:
    """One optimiser step under autocast through `forward` (a `TrainForward`, DDP-wrapped or not).

    Returns device tensors only and never waits for the device: whether the loss and
    gradient norm were finite is for a `DivergenceWatch` to note. (fp16's GradScaler
    reads its overflow flag on the host and skips overflowing steps itself, so under an
    enabled scaler a non-finite step is not a divergence.)
    """
    model: Classifier = getattr(forward, "module", forward).model
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, z = forward(x, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    finite = torch.isfinite(loss.detach()) & torch.isfinite(norm)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():  # outside autocast: the head reads its own float32 weights
        logits = model.head(z.detach().float())
        correct = (logits[:, : model.num_classes].argmax(dim=1) == y).sum()
    return StepOutcome(loss.detach(), correct, finite, norm.detach(), scaler.is_enabled())


def _diverged(cfg: TrainConfig, run_dir: Path, epoch: int, step: int, value: str) -> TrainingDiverged:
    kept = (f"the last good checkpoint (epoch {epoch}) is kept at {run_dir / 'ckpt.pt'}"
            if epoch > 0 else "no checkpoint was written (it diverged in the first epoch)")
    return TrainingDiverged(
        f"{cfg.run_name}: training diverged at epoch {epoch + 1}, step {step + 1} ({value}); "
        f"{kept}. Lower --lr or set --grad-clip (the suite default is {cfg.grad_clip})."
    )
