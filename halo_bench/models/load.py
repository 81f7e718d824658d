"""One entry for a model to evaluate: a halo-bench checkpoint, or a timm classifier trained
elsewhere (`eval FILE --model NAME --suite S`), as timm has one builder for every model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.console import console
from .runs import checkpoint_path


@dataclass(frozen=True)
class Foreign:
    """A classifier trained elsewhere: its timm architecture, the suite to evaluate it on,
    and whether to take a timm checkpoint's EMA weights."""

    arch: str
    suite: str
    use_ema: bool = False


@dataclass
class LoadedModel:
    """A model ready to evaluate, with what produced it: `meta` says what a halo-bench run's
    checkpoint says (suite, classes, data config, training config), `sha256` is the hash of
    exactly the bytes the weights were loaded from."""

    model: Any  # a Classifier
    meta: dict[str, Any]
    checkpoint: Path
    sha256: str
    model_key: str = ""  # what the feature cache is keyed by: the hash, and for a foreign file how it was read

    def __post_init__(self) -> None:
        self.model_key = self.model_key or self.sha256


def load_model(path: str | os.PathLike[str], registry: Any, foreign: Foreign | None = None) -> LoadedModel:
    """The model at `path` (a checkpoint or its run folder; with `foreign`, a weights file)."""
    ckpt = checkpoint_path(path)
    if foreign is not None:
        from .foreign import foreign_run

        model, meta = foreign_run(ckpt, foreign.arch, foreign.suite, registry, foreign.use_ema)
        console.print(model.weights_report.summary(), markup=False)
        # One file gives other models by architecture and by --use-ema: each has features of its own.
        key = f"{model.weights_report.sha256}:{foreign.arch}:{'ema' if foreign.use_ema else 'weights'}"
        return LoadedModel(model, meta, ckpt, model.weights_report.sha256, key)
    from .checkpoint import load_checkpoint

    model, meta = load_checkpoint(ckpt)
    if not meta.get("complete"):
        epochs = meta.get("train_config", {}).get("epochs")
        console.print(f"[yellow]warning:[/] {ckpt} is an unfinished run (epoch {meta.get('epochs_done')} of "
                      f"{epochs}); a report leaves its results out unless --include-incomplete.")
    return LoadedModel(model, meta, ckpt, meta["checkpoint_sha256"])
