"""What a run trains with, built once from its config: the model (from the seed), the ID
train/test data and the loader (DataLoader, or the device pipeline), the device and
precision, and the optimiser with its warm-up + cosine schedule."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..core import distributed
from ..core.console import console
from ..core.devices import amp_dtype, channels_last_format, resolve_device
from ..core.errors import HaloBenchError
from ..data import (
    LoadOptions,
    check_labels,
    default_workers,
    load_split,
    resolve_data_root,
)
from ..data.device import DeviceBatches, choose_pipeline
from ..data.registry import Registry, SuiteSpec
from ..models.archs import resolve_arch
from ..models.classifier import Classifier, build_model, probe_input
from .config import TrainConfig


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
    model, arch, data_config = _model(cfg, suite, id_spec, sync_bn=cfg.sync_bn and sync_bn_note is None)
    # Same data order and dropout stream for every loss of a seed, whatever the head drew.
    torch.manual_seed(cfg.seed)
    loader_gen = torch.Generator().manual_seed(cfg.seed)

    data_root = resolve_data_root(cfg.data_root)
    augment = () if cfg.freeze_backbone else suite.train_augment  # cached features: no augmentation
    train_data = load_split(id_spec, "train", data_config, LoadOptions(data_root, augment))
    test_data = load_split(id_spec, "test", data_config, LoadOptions(data_root))
    for dataset in (train_data, test_data):
        check_labels(id_spec, dataset, len(id_spec.classes or ()))
    assert cfg.batch_size is not None
    # Every rank takes an equal slice of every batch; one process avoids a tiny last batch in BatchNorm.
    drop_last = ranks.distributed or len(train_data) >= 2 * cfg.batch_size
    workers = default_workers(id_spec, cfg.num_workers)
    memory_format = channels_last_format(device, cfg.channels_last)
    loader, on_device = _train_loader(cfg, train_data, data_config, augment, device, ranks, loader_gen, drop_last,
                                      workers, memory_format)
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
        from ..models import finetune

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
                 "device" if on_device else "loader", ranks)


def _model(cfg: TrainConfig, suite: SuiteSpec, id_spec: Any, sync_bn: bool) -> tuple[Classifier, str, dict[str, Any]]:
    """(model, architecture built, data config): timm's model for the suite (its CIFAR variant
    where the suite asks), its weights (random from the seed, pretrained or a file), checked
    against the input size; the data config is the model's own when its weights are loaded."""
    from ..models import finetune

    channels = suite.data_config["input_size"][0]
    arch = cfg.model if cfg.loaded_weights else resolve_arch(cfg.model, suite.arch_variant)
    if cfg.pretrained:  # the model keeps its own input channels; the data is adapted to them
        from ..models.weights import pretrained_channels

        channels = pretrained_channels(arch)
    model = build_model(arch, cfg.loss, len(id_spec.classes or ()), channels, cfg.embed_dim, cfg.seed,
                        cfg.loss_knobs, pretrained=cfg.pretrained, init_from=cfg.init_from, use_ema=cfg.use_ema)
    report = getattr(model, "weights_report", None)
    if report is not None:
        console.print(report.summary(), markup=False)
    data_config = finetune.model_data_config(suite.data_config, model.backbone, cfg.pretrained, cfg.img_size)
    data_config["input_size"][0] = channels
    probe_input(model, data_config["input_size"], arch)
    if cfg.freeze_backbone:
        finetune.freeze_backbone(model)
    if sync_bn:
        distributed.sync_batchnorm(model)
    return model, arch, data_config


def _train_loader(cfg: TrainConfig, train_data: Dataset, data_config: dict[str, Any], augment: tuple[str, ...],
                  device: torch.device, ranks: distributed.Ranks, loader_gen: torch.Generator, drop_last: bool,
                  workers: int, memory_format: torch.memory_format | None) -> tuple[Any, bool]:
    """(the loader of one epoch's batches, whether it serves them from the device)."""
    assert cfg.batch_size is not None
    array = None if cfg.freeze_backbone else choose_pipeline(cfg.data_pipeline, train_data, data_config,
                                                             augment, device, train=True)
    if array is not None:  # uint8 images on the device, augmented there (data/device.py)
        return DeviceBatches(array, device, cfg.batch_size, data_config, augment=augment, shuffle=True,
                             seed=cfg.seed, drop_last=drop_last, rank=ranks.rank, world_size=ranks.world_size,
                             memory_format=memory_format), True
    if ranks.distributed:  # each rank its shard of a (seed, epoch) permutation
        per_rank = distributed.rank_batch_size(cfg.batch_size, ranks.world_size)
        sampler: DistributedSampler[Any] = DistributedSampler(
            train_data, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        return DataLoader(train_data, batch_size=per_rank, sampler=sampler, generator=loader_gen, drop_last=True,
                          num_workers=workers, pin_memory=device.type == "cuda"), False
    # No persistent workers: each epoch then draws its worker seeds from loader_gen,
    # so a resumed run sees the same augmentations as an uninterrupted one.
    return DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
                      drop_last=drop_last, num_workers=workers, pin_memory=device.type == "cuda"), False


def make_optimisation(cfg: TrainConfig, setup: Setup) -> Optimisation:
    """SGD over the trainable parameters, warm-up + cosine per step, fp16's loss scaler."""
    assert cfg.epochs is not None and cfg.lr is not None
    from ..models.finetune import param_groups as scaled_groups

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
