"""Safe checkpoint save and load.

A checkpoint is a dict of tensors and plain Python data (str, int, float, bool,
list, dict), saved with `torch.save` and loaded with `weights_only=True`, so loading
a file never runs code from it. It carries the SHA-256 of its own content
(`content_sha256`, over the loaded objects, not the zip bytes), checked on every read:
a flipped byte in a weight is an error, never a silently different model. A read
hashes exactly the bytes it loads (docs/integrity.md)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..core.errors import HaloBenchError
from ..core.io import (
    CONTENT_KEY,
    atomic_write_bytes,
    content_digest,
    load_plain_torch_bytes,
    sha256_bytes,
    torch_bytes,
    verify_content,
)
from . import archs  # noqa: F401  (registers the CIFAR variants with timm)
from .classifier import Classifier, model_from_meta

CHECKPOINT_FORMAT = "halo-bench-checkpoint"


CHECKPOINT_VERSION = 1




def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> str:
    """Atomically write weights, plain metadata, (optionally) the training state and the
    digest of all three; returns the SHA-256 of the file's bytes."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_state": train_state,
    }
    state[CONTENT_KEY] = content_digest(state)
    data = torch_bytes(state)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict without unpickling arbitrary objects; validate its format and
    content digest. `state["sha256"]` is the SHA-256 of exactly the bytes that were loaded
    (the file is read once), so results and caches keyed by it name the weights used."""
    from .runs import checkpoint_path

    path = checkpoint_path(path)
    with open(path, "rb") as handle:
        data = handle.read()
    head = data[:4]
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        looks = " It looks like JSON text (a run's config.json or results.json?)." if head[:1] in (b"{", b"[") else ""
        raise HaloBenchError(
            f"{path} is not a PyTorch checkpoint (torch.save writes zip archives; this file is not one).{looks} "
            f"Give the run's {path.with_name('ckpt.pt').name}."
        )
    state = load_plain_torch_bytes(
        data, path, "checkpoint", "A file saved with torch.save(model) holds the whole model object: save "
        "model.state_dict() instead. Only checkpoints of tensors and plain data are read.")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HaloBenchError(f"{path} is not a halo-bench checkpoint (no '{CHECKPOINT_FORMAT}' marker).")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise HaloBenchError(
            f"{path} has checkpoint format version {state.get('format_version')!r}; "
            f"this halo-bench reads version {CHECKPOINT_VERSION}."
        )
    verify_content(state, path)
    state["sha256"] = sha256_bytes(data)
    return state





def refuse_non_finite(state: dict[str, Any], path: Any, advice: str) -> None:
    """A HaloBenchError naming the first weights of `state` that hold NaN or inf, if any do."""
    bad = [name for name, value in state.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise HaloBenchError(
            f"{path} holds non-finite weights (NaN or inf in {', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}): it cannot be evaluated. {advice}"
        )


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (on the CPU).

    The returned metadata carries `checkpoint_sha256`, the hash of the bytes loaded.
    Weights that are not finite are refused: they would only give NaN scores.
    """
    state = read_checkpoint(path)
    meta = {**state["meta"], "checkpoint_sha256": state["sha256"]}
    refuse_non_finite(state["model"], path, "Use a checkpoint of a run that trained without diverging.")
    try:
        model = model_from_meta(meta)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise HaloBenchError(f"{path}: checkpoint metadata and weights do not match: {exc}") from None
    model.eval()
    return model, meta
