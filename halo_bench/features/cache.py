"""On-disk cache of forward passes, so evaluations of one checkpoint share them.

One file per (checkpoint, dataset, split, transform): `<key digest>.pt` holding the
split's logits, embeddings, penultimate features and labels as float32 / int64
tensors plus the key itself as plain data. Files are written atomically and read
with `torch.load(weights_only=True)`, so reading never runs code from a file; a
file that does not match its key or the content digest recorded in it, or is
unreadable, is ignored with a warning (and rewritten), never trusted. The key covers
everything that changes the numbers: the sha256 of the checkpoint bytes the model was
loaded from, the dataset's registry entry for that split, the data root, the data
config (transform) and the autocast dtype.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import HaloBenchError
from ..core.io import atomic_write_bytes, content_digest, torch_bytes
from .passes import SplitOutputs

CACHE_FORMAT = "halo-bench-features"
CACHE_VERSION = 2  # 2: a content digest in every file
CACHE_DIR = "feature-cache"
_FIELDS = ("logits", "features", "penultimate", "labels")


@dataclass(frozen=True)
class CacheKey:
    checkpoint_sha256: str  # of the bytes loaded (LoadedModel.model_key: a foreign file adds its arch and EMA choice)
    dataset: str
    split: str
    source: dict[str, Any]  # the registry entry's source, generator and parameters for this split
    data_root: str
    data_config: dict[str, Any]
    amp_dtype: str | None

    def plain(self) -> dict[str, Any]:
        """JSON-normal form (tuples become lists), as stored and compared."""
        return json.loads(json.dumps(asdict(self), sort_keys=True, default=str))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.plain(), sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    """`get(key, compute, n)`: the cached outputs of `key`, else `compute()`, stored.

    `folder=None` disables the cache (--no-cache): always compute, never write.
    `hits` and `misses` name what one evaluation read and computed.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, key: CacheKey) -> Path:
        assert self.folder is not None
        return self.folder / f"{key.digest()}.pt"

    def get(self, key: CacheKey, compute: Callable[[], SplitOutputs], n: int) -> SplitOutputs:
        label = f"{key.dataset}/{key.split}"
        if self.folder is not None:
            cached = self.load(key, n)
            if cached is not None:
                self.hits.append(label)
                return cached
        outputs = compute()
        check_finite(outputs, label)
        self.misses.append(label)
        if self.folder is not None:
            self.save(key, outputs)
        return outputs

    def load(self, key: CacheKey, n: int) -> SplitOutputs | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt, truncated or foreign: recompute
            _warn(f"ignoring unreadable feature cache {path} ({type(exc).__name__}); recomputing it.")
            return None
        problem = _invalid(state, key, n)
        if problem:
            _warn(f"ignoring feature cache {path}: {problem}; recomputing it.")
            return None
        return SplitOutputs(**{name: state[name] for name in _FIELDS})

    def save(self, key: CacheKey, outputs: SplitOutputs) -> None:
        state = {"format": CACHE_FORMAT, "format_version": CACHE_VERSION, "key": key.plain(),
                 **{name: getattr(outputs, name).contiguous() for name in _FIELDS}}
        state[_DIGEST] = content_digest(state)
        atomic_write_bytes(self.path(key), torch_bytes(state))


_DIGEST = "content_sha256"


def check_finite(outputs: SplitOutputs, label: str) -> None:
    """Refuse a forward pass whose outputs hold NaN or inf (never cached: every later eval would
    read them back and fail in a detector)."""
    bad = [name for name in ("logits", "features", "penultimate")
           if getattr(outputs, name).is_floating_point() and not bool(torch.isfinite(getattr(outputs, name)).all())]
    if bad:
        raise HaloBenchError(f"the model's {' and '.join(bad)} on {label} hold NaN or inf: its weights or its "
                             "precision cannot represent these inputs. Check the weights file, or evaluate with "
                             "--no-amp.")


def _invalid(state: Any, key: CacheKey, n: int) -> str:
    """Why `state` is not the outputs of `key` over `n` samples ('' if it is)."""
    if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
        return "not a halo-bench feature cache"
    if state.get("format_version") != CACHE_VERSION:
        return f"format version {state.get('format_version')!r}, expected {CACHE_VERSION}"
    if state.get("key") != key.plain():
        return "written for another checkpoint, dataset or transform"
    recorded = state.pop(_DIGEST, None)
    if recorded != content_digest(state):
        return "its content does not match the digest recorded when it was written (corrupt)"
    tensors = [state.get(name) for name in _FIELDS]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return "missing tensors"
    logits, features, penult, labels = tensors
    if any(t.dtype != torch.float32 or t.dim() != 2 for t in (logits, features, penult)):
        return "features are not 2-D float32"
    if labels.dtype != torch.int64 or labels.dim() != 1:
        return "labels are not 1-D int64"
    if not all(len(t) == n for t in tensors):
        return f"holds {len(labels)} samples, the split has {n}"
    if not all(bool(torch.isfinite(t).all()) for t in (logits, features, penult)):
        return "holds non-finite values"
    return ""


def _warn(message: str) -> None:
    from ..core.console import console

    console.print(f"warning: {message}", markup=False)
