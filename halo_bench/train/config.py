"""What defines a training run, as plain data: no torch, so the CLI validates it instantly."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import HaloBenchError
from ..core.limits import MAX_LR, MAX_SEED, MAX_WEIGHT_DECAY
from ..core.runtime import RUNTIME_FIELDS as RUNTIME
from ..core.runtime import Runtime
from ..data.base import check_data_pipeline
from ..losses import get_loss

if TYPE_CHECKING:
    from ..data.registry import Registry


# Config fields that do not change what is trained, so a run may resume with others.
FINETUNE_LR_FACTOR = 0.1  # full fine-tuning: the suite's lr x 0.1 for the new layers ...


FINETUNE_BACKBONE_LR_SCALE = 0.1  # ... and x 0.1 again for the loaded backbone


# What a run saved before these fields existed trained with (so it still resumes).
SAVED_DEFAULTS = {"pretrained": False, "init_from": None, "use_ema": False, "freeze_backbone": False,
                  "backbone_lr_scale": 1.0, "img_size": None, "sync_bn": False}


# Recorded only when set: a run without them keeps the saved config (and report grouping) it always had.
RECORDED_WHEN_SET = ("sync_bn",)




# Config fields that do not change what is trained, so a run may resume with others.
RUNTIME_FIELDS = RUNTIME | {"compile", "out"}


@dataclass
class TrainConfig(Runtime):
    """Everything that defines a training run. `None` recipe fields take the suite's default;
    the `Runtime` settings (device, precision, workers, data pipeline and root) and
    `compile` and `out` say how it runs, not what it trains.

    `loss_knobs` holds the loss's hyperparameters (see `halo-bench losses`); the
    ones not given take the loss's defaults when the config is resolved.
    """

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
    loss_knobs: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    out: str = "runs"
    # Bring your own model (halo_bench/models/weights.py, halo_bench/models/finetune.py); all change what is trained.
    pretrained: bool = False  # timm's pretrained weights for `model` (name or name.tag)
    init_from: str | None = None  # a local weights file: state_dict, timm checkpoint, halo-bench ckpt
    use_ema: bool = False  # take a timm checkpoint's state_dict_ema
    freeze_backbone: bool = False  # only the embedding and head train, on cached backbone features
    backbone_lr_scale: float | None = None  # backbone lr multiplier (default: 0.1 with loaded weights)
    img_size: int | None = None  # input height = width (default: the model's, else the suite's)
    # BatchNorm statistics over the global batch under torchrun (SyncBatchNorm, CUDA only), not each
    # GPU's slice: it changes what is trained, so it is part of the identity, not of the run's name.
    sync_bn: bool = False

    def resolved(self, registry: Registry) -> TrainConfig:
        """A copy with every unset recipe field filled from the suite's recipe and every
        loss knob from the loss's defaults."""
        self.check()
        recipe = registry.suite(self.suite).recipe
        values = asdict(self)
        for key, default in recipe.items():
            if values.get(key) is None:
                values[key] = default
        if values["grad_clip"] is not None and values["grad_clip"] <= 0:
            values["grad_clip"] = None  # --grad-clip 0 turns clipping off
        values["loss_knobs"] = _asdict(get_loss(self.loss).make_knobs(self.loss_knobs))
        if self.loaded_weights:  # the fine-tuning recipe: docs/byom.md, "Fine-tuning modes"
            if self.lr is None and not self.freeze_backbone:
                values["lr"] = recipe.get("lr", 0.05) * FINETUNE_LR_FACTOR
            if values["backbone_lr_scale"] is None:
                values["backbone_lr_scale"] = FINETUNE_BACKBONE_LR_SCALE
        elif values["backbone_lr_scale"] is None:
            values["backbone_lr_scale"] = 1.0
        resolved = TrainConfig(**values)
        resolved.check()
        return resolved

    def check(self) -> None:
        """Reject values no run can use, naming the flag to fix."""
        get_loss(self.loss)
        numbers = {"--lr": self.lr, "--weight-decay": self.weight_decay, "--momentum": self.momentum,
                   "--grad-clip": self.grad_clip}
        for flag, value in numbers.items():
            if value is not None and not math.isfinite(value):
                raise HaloBenchError(f"{flag} must be a finite number, got {value}.")
        check_seed(self.seed, "--seed")
        backbone_lr = (self.lr or 0.0) * (self.backbone_lr_scale or 0.0)
        problems = [
            (self.epochs is not None and self.epochs < 1, "--epochs must be at least 1"),
            (self.batch_size is not None and self.batch_size < 1, "--batch-size must be at least 1"),
            (self.lr is not None and not 0 < self.lr <= MAX_LR, f"--lr must be positive and at most {MAX_LR:g}, "
             f"got {self.lr}"),
            (self.momentum is not None and not 0 <= self.momentum < 1, "--momentum must lie in [0, 1)"),
            (self.weight_decay is not None and not 0 <= self.weight_decay <= MAX_WEIGHT_DECAY,
             f"--weight-decay must lie in [0, {MAX_WEIGHT_DECAY:g}], got {self.weight_decay}"),
            (self.warmup_epochs is not None and self.warmup_epochs < 0, "--warmup-epochs must be >= 0"),
            (self.embed_dim is not None and self.embed_dim < 1, "--embed-dim must be at least 1"),
            (self.num_workers is not None and self.num_workers < 0, "--num-workers must be >= 0"),
            (self.pretrained and self.init_from is not None,
             "--pretrained and --init-from both name weights; give one"),
            (self.use_ema and self.init_from is None, "--use-ema chooses a checkpoint's EMA weights; it needs "
             "--init-from FILE"),
            (self.freeze_backbone and not self.loaded_weights, "--freeze-backbone keeps the backbone's weights "
             "as loaded; it needs --pretrained or --init-from FILE"),
            (self.backbone_lr_scale is not None and not (math.isfinite(self.backbone_lr_scale)
                                                         and self.backbone_lr_scale >= 0),
             "--backbone-lr-scale must be a finite number >= 0"),
            (backbone_lr > MAX_LR, f"--backbone-lr-scale x --lr, the backbone's learning rate, must be at most "
             f"{MAX_LR:g}, got {backbone_lr:g}"),
            (self.img_size is not None and self.img_size < 1, "--img-size must be at least 1"),
        ]
        for bad, message in problems:
            if bad:
                raise HaloBenchError(f"{message}.")
        check_data_pipeline(self.data_pipeline)

    @property
    def eval_batch_size(self) -> int:
        """Batch size of the per-epoch test pass and of caching frozen-backbone features."""
        assert self.batch_size is not None
        return max(256, self.batch_size)

    @property
    def loss_tag(self) -> str:
        """The loss and its non-default knobs, as in run folders: `halo`, `cce+ls0.1`."""
        spec = get_loss(self.loss)
        return spec.tag(_asdict(spec.make_knobs(self.loss_knobs)))

    @property
    def loaded_weights(self) -> bool:
        return self.pretrained or self.init_from is not None

    @property
    def weights_tag(self) -> str:
        """How the run folder names loaded weights: `+pretrained`, `+init-<stem>`, `+frozen`, `+ema`."""
        tag = ""
        if self.pretrained and "." not in self.model:
            tag += "+pretrained"
        if self.init_from is not None:
            stem = Path(self.init_from).name.split(".")[0]
            if stem == "ckpt":  # a halo-bench run: name it by its folder
                stem = Path(self.init_from).parent.name
            tag += "+init-" + (re.sub(r"[^A-Za-z0-9_.]+", "_", stem) or "file")
        if self.use_ema:
            tag += "+ema"
        if self.freeze_backbone:
            tag += "+frozen"
        if self.img_size is not None:
            tag += f"+{self.img_size}px"
        return tag

    @property
    def run_name(self) -> str:
        return f"{self.suite}-{self.model}{self.weights_tag}-{self.loss_tag}-s{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a checkpoint to be resumed by this config."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME_FIELDS}

    def record(self) -> dict[str, Any]:
        """The config as a run saves it (config.json, ckpt.pt, results.json)."""
        values = asdict(self)
        for name in RECORDED_WHEN_SET:
            if values[name] == SAVED_DEFAULTS[name]:
                del values[name]
        return values


def saved_identity(saved: dict[str, Any]) -> dict[str, Any]:
    """`TrainConfig.identity()` of a saved config, whichever halo-bench version saved it."""
    return {k: v for k, v in {**SAVED_DEFAULTS, **saved}.items() if k not in RUNTIME_FIELDS}


def check_seed(seed: int, flag: str) -> None:
    """A seed in [0, MAX_SEED], the range in which no two seeds give the same run."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise HaloBenchError(f"{flag} must be >= 0 and <= {MAX_SEED} (2**32 - 1; a larger seed repeats the run "
                             f"of a smaller one), got {seed!r}.")


def check_seeds(seeds: list[int], flag: str = "--seeds") -> None:
    """At least one seed, each in range, none twice (a repeated seed is not an independent run)."""
    if not seeds:
        raise HaloBenchError(f"{flag} names no seed; give at least one, e.g. {flag} 0,1,2.")
    for seed in seeds:
        check_seed(seed, flag)
    duplicates = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if duplicates:
        raise HaloBenchError(f"{flag} lists seed(s) {', '.join(map(str, duplicates))} twice.")


def _asdict(knobs: Any) -> dict[str, Any]:
    return {f.name: getattr(knobs, f.name) for f in fields(knobs)}
