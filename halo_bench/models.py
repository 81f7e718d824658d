"""timm backbone + embedding layer + head, and safe checkpoint save/load.

A checkpoint is a dict of tensors and plain Python data (str, int, float, bool,
list, dict), saved with `torch.save` and loaded with `weights_only=True`, so loading
a file never runs code from it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import archs  # noqa: F401  (registers the CIFAR variants with timm)
from .errors import HaloBenchError, unknown_name
from .heads import HALOHead, LinearHead, head_from_config
from .io import atomic_write_with

CHECKPOINT_FORMAT = "halo-bench-checkpoint"
CHECKPOINT_VERSION = 1
LOSSES = ("cce", "halo")


class Classifier(nn.Module):
    """backbone (timm, num_classes=0) -> linear embedding to D -> head."""

    def __init__(self, backbone: nn.Module, embed: nn.Linear, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed = embed
        self.head = head

    @property
    def abstain(self) -> bool:
        return bool(getattr(self.head, "abstain", False))

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The embedding the head consumes (what Mahalanobis and halo_distance read)."""
        return self.embed(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.forward_features(x)
        return self.head(z), z

    def forward_penultimate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, embedding and the backbone's pooled penultimate features (what OpenOOD's
        feature-based postprocessors read), from one pass."""
        h = self.backbone(x)
        z = self.embed(h)
        return self.head(z), z, h

    def logits_from_penultimate(self, h: Tensor) -> Tensor:
        """The logits of given penultimate features: embed then head, no backbone."""
        return self.head(self.embed(h))


def check_model_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        raise unknown_name("timm model", name, timm.list_models())


def build_model(
    model_name: str,
    loss: str,
    num_classes: int,
    in_chans: int,
    embed_dim: int | None = None,
    seed: int = 0,
    head_kwargs: dict[str, Any] | None = None,
) -> Classifier:
    """Build a randomly initialised classifier.

    The backbone and embedding are created from `seed` before the head, so a CCE and
    a HALO model of the same seed start from identical weights except the head.
    """
    import timm

    check_model_name(model_name)
    if loss not in LOSSES:
        raise unknown_name("loss", loss, LOSSES)
    embed_dim = num_classes if embed_dim is None else embed_dim
    torch.manual_seed(seed)
    try:
        backbone = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise HaloBenchError(f"timm could not build {model_name!r}: {exc}") from None
    embed = nn.Linear(backbone.num_features, embed_dim)
    head_kwargs = dict(head_kwargs or {})
    head_cls = HALOHead if loss == "halo" else LinearHead
    try:
        head = head_cls(in_features=embed_dim, num_classes=num_classes, **head_kwargs)
    except ValueError as exc:  # e.g. HALO with D < 3: a flag the user can change
        raise HaloBenchError(f"cannot build the {loss.upper()} head: {exc} (see --embed-dim).") from None
    return Classifier(backbone, embed, head)


@torch.no_grad()
def probe_input(model: Classifier, input_size: tuple[int, int, int], arch: str) -> None:
    """Fail early, with a clear message, if `arch` cannot take the suite's input size."""
    was_training = model.training
    try:
        model.eval()(torch.zeros(2, *input_size))
    except MemoryError:
        raise
    except Exception as exc:  # timm raises AssertionError, RuntimeError, ... on a bad size
        raise HaloBenchError(
            f"timm model {arch!r} cannot take inputs of size {tuple(input_size)} "
            f"(channels, height, width): {_first_line(exc)}. "
            "Pick a model that accepts this size, or a suite whose data config fits the model."
        ) from None
    finally:
        model.train(was_training)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def model_from_meta(meta: dict[str, Any]) -> Classifier:
    """Rebuild the architecture a checkpoint describes (weights are loaded separately)."""
    import timm

    spec = meta["model"]
    arch = spec.get("arch", spec["name"])
    backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=spec["in_chans"])
    embed = nn.Linear(backbone.num_features, spec["embed_dim"])
    return Classifier(backbone, embed, head_from_config(spec["head"]))


def model_meta(model: Classifier, model_name: str, loss: str, in_chans: int,
               arch: str | None = None) -> dict[str, Any]:
    """Plain metadata that rebuilds the architecture: `name` as asked, `arch` as built."""
    return {
        "name": model_name,
        "arch": arch or model_name,
        "loss": loss,
        "in_chans": in_chans,
        "embed_dim": model.embed.out_features,
        "num_features": model.embed.in_features,
        "head": model.head.config(),
        "num_params": sum(p.numel() for p in model.parameters()),
    }


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> None:
    """Atomically write weights, plain metadata and (optionally) the training state."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_state": train_state,
    }
    atomic_write_with(path, lambda handle: torch.save(state, handle))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict without unpickling arbitrary objects; validate its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise HaloBenchError(f"checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported" in line), "")
        raise HaloBenchError(
            f"refused to load {path}: it holds Python objects other than tensors and plain data, "
            "and unpickling them could run code"
            + (f" ({detail[:200]})" if detail else "")
            + ". Only checkpoints written by halo-bench are accepted."
        ) from None
    except Exception as exc:  # torch.load fails on garbage with many exception types
        raise HaloBenchError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HaloBenchError(f"{path} is not a halo-bench checkpoint (no '{CHECKPOINT_FORMAT}' marker).")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise HaloBenchError(
            f"{path} has checkpoint format version {state.get('format_version')!r}; "
            f"this halo-bench reads version {CHECKPOINT_VERSION}."
        )
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (on the CPU)."""
    state = read_checkpoint(path)
    meta = state["meta"]
    try:
        model = model_from_meta(meta)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise HaloBenchError(f"{path}: checkpoint metadata and weights do not match: {exc}") from None
    model.eval()
    return model, meta


__all__ = [
    "Classifier",
    "HALOHead",
    "LinearHead",
    "build_model",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
