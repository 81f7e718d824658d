"""Weights in, timm's way: `--pretrained` (timm's pretrained config and the Hugging Face cache)
and `--init-from FILE` (a plain state_dict, a timm train.py checkpoint, a halo-bench checkpoint).

Every file is read without unpickling arbitrary objects (safetensors, or `torch.load` with
`weights_only=True`); the weights then go through timm's own `load_pretrained` (via the
`state_dict`/`file` overlay of the pretrained config), so the input conv is adapted to the
suite's channels and a classifier of another class count is dropped, as timm does for its users.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import HaloBenchError
from ..core.io import load_plain_torch_bytes, sha256_bytes, sha256_file, verify_content

HALO_FORMAT = "halo-bench-checkpoint"


@dataclass
class WeightsReport:
    """What was loaded: the source, the file and its hash, the keys dropped, missing and unused."""

    source: str  # "pretrained" or "file"
    name: str  # timm name.tag, or the file path
    path: str | None
    sha256: str | None
    kind: str  # safetensors, state_dict, timm-checkpoint, timm-checkpoint-ema, halo-bench, hf-cache
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_loaded: bool = False
    notes: list[str] = field(default_factory=list)  # what timm did to the weights, in our words

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def summary(self) -> str:
        parts = [f"loaded {self.kind} weights from {self.name}"]
        if self.sha256:
            parts.append(f"(sha256 {self.sha256[:12]}...)")
        for label, keys in (("dropped", self.dropped), ("missing (initialised)", self.missing),
                            ("unused", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                parts.append(f"; {label}: {shown}")
        if self.head_loaded:
            parts.append("; embedding and head loaded too")
        parts.extend(f"; {note}" for note in self.notes)
        return " ".join(parts)


# --------------------------------------------------------------------------- reading files safely

def read_weights_file(path: str | os.PathLike[str]) -> Any:
    """The file's contents as tensors and plain data; a pickle of other objects is refused."""
    return read_weights_file_hashed(path)[0]


def read_weights_file_hashed(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """(`read_weights_file`'s contents, SHA-256 of the bytes they were loaded from): one read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HaloBenchError(f"weights file {path} does not exist (or is not a file).")
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        try:
            return load(data), sha256_bytes(data)
        except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
            raise HaloBenchError(f"{path} is not a readable safetensors file: {exc}") from None
    obj = load_plain_torch_bytes(data, path, "weights file", "Save model.state_dict() (or use safetensors) instead.")
    return obj, sha256_bytes(data)


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _clean(state: dict[str, Any]) -> dict[str, Any]:
    """Strip DataParallel/DDP's `module.` and torch.compile's `_orig_mod.` prefixes, as timm does."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def select_state_dict(obj: Any, path: Path, use_ema: bool) -> tuple[dict[str, Any], str]:
    """(backbone-side state_dict, kind) from a plain state_dict or a timm train.py checkpoint."""
    if isinstance(obj, dict) and use_ema:
        for key in ("state_dict_ema", "model_ema", "state_dict_ema_v2"):
            if _is_state_dict(obj.get(key)):
                return _clean(obj[key]), "timm-checkpoint-ema"
        raise HaloBenchError(f"--use-ema: {path} holds no EMA weights (no 'state_dict_ema' entry); "
                             "drop --use-ema to load its 'state_dict'.")
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                return _clean(obj[key]), "timm-checkpoint"
    if _is_state_dict(obj):
        return _clean(obj), "state_dict"
    raise HaloBenchError(
        f"{path} holds no state_dict: expected a dict of tensors, a timm training checkpoint "
        "('state_dict', 'state_dict_ema') or a halo-bench ckpt.pt.")


# --------------------------------------------------------------------------- the Hugging Face cache

def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps its cache: $HF_HUB_CACHE, $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "huggingface" / "hub"


def cached_hub_file(repo_id: str) -> Path | None:
    """The weights file of `repo_id` in the hub cache (model.safetensors, else pytorch_model.bin)."""
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        candidate = repo / "snapshots" / revision / filename
        if candidate.is_file():
            return candidate
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub ($HF_ENDPOINT, else huggingface.co) accepts a connection within `timeout`
    seconds: one probe instead of huggingface_hub's retries (about 50 s) when it cannot."""
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    try:
        port = url.port or (80 if url.scheme == "http" else 443)  # a mirror may listen elsewhere
    except ValueError:  # a port that is not a number: let huggingface_hub say so
        return True
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_command(name: str, repo_id: str) -> str:
    return (f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\"  "
            f"(or: huggingface-cli download {repo_id})")


# --------------------------------------------------------------------------- building backbones

def _pretrained_cfg(name: str) -> Any:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise HaloBenchError(f"timm has no pretrained weights for {name!r}; name a tag that has them "
                             "(see timm.list_pretrained()), or drop --pretrained.")
    return cfg


def pretrained_channels(name: str) -> int:
    return int(_pretrained_cfg(name).input_size[0])


def create_pretrained(name: str, in_chans: int, num_classes: int = 0) -> tuple[Any, WeightsReport]:
    """timm's pretrained weights for `name` (or `name.tag`), from the hub cache without a network;
    an uncached weight fails at once (offline) with the command that fetches it."""
    import timm

    cfg = _pretrained_cfg(name)
    base = name.partition(".")[0]
    full = f"{base}.{cfg.tag}" if cfg.tag else base
    repo_id = cfg.hf_hub_id
    cached = cached_hub_file(repo_id) if repo_id else None
    overlay: dict[str, Any] = {}
    if cached is not None:
        overlay = {"file": str(cached)}  # timm's own load_pretrained, no network round trip
    elif _offline() or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face hub cannot be reached"
        raise HaloBenchError(
            f"timm's pretrained weights {full!r} are not in the Hugging Face cache ({hub_cache_dir()}) and "
            f"{why}. Fetch them on a machine with a network: {fetch_command(full, repo_id or full)}")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                                  pretrained_cfg_overlay=overlay or None)
    except (RuntimeError, ValueError, OSError) as exc:
        raise HaloBenchError(f"timm could not load the pretrained weights {full!r}: {exc}") from None
    path = cached if cached is not None else cached_hub_file(repo_id) if repo_id else None
    report = WeightsReport("pretrained", full, str(path) if path else None,
                           sha256_file(path) if path else None, "hf-cache" if cached else "hf-hub")
    if num_classes != cfg.num_classes and cfg.classifier:
        report.dropped = [f"{c}.*" for c in ([cfg.classifier] if isinstance(cfg.classifier, str)
                                              else cfg.classifier)]
    return model, report


def _state_keys(model: Any) -> set[str]:
    return set(model.state_dict())


def create_from_state(arch: str, state: dict[str, Any], in_chans: int, num_classes: int = 0) -> tuple[Any, dict[str, list[str]]]:
    """Build `arch` and load `state` through timm's load_pretrained (input conv adapted, classifier
    dropped when the class count differs); returns the model and the dropped/missing/unused keys."""
    import timm
    from timm.models import get_pretrained_cfg

    base = get_pretrained_cfg(arch) or get_pretrained_cfg(arch.partition(".")[0])
    classifier = getattr(base, "classifier", None) if base is not None else None
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier or [])
    file_classes = 0
    for c in classifiers:
        weight = state.get(f"{c}.weight")
        if weight is not None:
            file_classes = int(weight.shape[0])
    first_conv = getattr(base, "first_conv", None) if base is not None else None
    convs = [first_conv] if isinstance(first_conv, str) else list(first_conv or [])
    file_chans = next((int(state[f"{c}.weight"].shape[1]) for c in convs if f"{c}.weight" in state), in_chans)
    overlay = {"state_dict": dict(state), "num_classes": file_classes, "first_conv": first_conv,
               "classifier": classifier}
    notes: list[str] = []
    try:
        with _timm_channel_notes(arch, notes):
            model = timm.create_model(arch, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                                      pretrained_cfg_overlay=overlay, pretrained_strict=False)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise HaloBenchError(f"the weights do not fit timm model {arch!r}: {str(exc).splitlines()[0]}. "
                             "Name the architecture they were trained with.") from None
    model_keys = _state_keys(model)
    dropped = sorted(k for k in state if any(k.startswith(f"{c}.") for c in classifiers)
                     and file_classes != num_classes)
    loaded = set(state) - set(dropped)
    missing = sorted(model_keys - loaded)
    unexpected = sorted(loaded - model_keys)
    if len(missing) > len(model_keys) // 2:
        raise HaloBenchError(
            f"the weights do not fit timm model {arch!r}: {len(missing)} of its {len(model_keys)} tensors are "
            f"missing from the file (e.g. {', '.join(missing[:3])}). Name the architecture they were trained with.")
    if file_chans != in_chans:
        dropped.append(f"(input conv adapted from {file_chans} to {in_chans} channels)")
    return model, {"dropped": dropped, "missing": missing, "unexpected": unexpected, "notes": notes}


# timm 1.0's words when a file's input conv already has the model's channels but the architecture's
# default config (made for its RGB weights) declares another count: true, and alarming to a reader.
_TIMM_SAME_CHANNELS = re.compile(r"Pretrained (\S+) weights already match the model, but input_size declares "
                                 r"(\d+) source channels and the model has (\d+)")


@contextmanager
def _timm_channel_notes(arch: str, notes: list[str]) -> Iterator[None]:
    """Hold back timm's "input_size declares 3 source channels and the model has 1. Loading
    unchanged." and say what it means in `notes`: the file's input conv already takes the
    model's channels (e.g. a halo-bench digits checkpoint), so nothing was adapted."""
    logger = logging.getLogger("timm.models._builder")

    def explain(record: logging.LogRecord) -> bool:
        found = _TIMM_SAME_CHANNELS.search(record.getMessage())
        if found is None:
            return True
        conv, declared, chans = found.groups()
        plural = "" if chans == "1" else "s"
        notes.append(f"input conv {conv}: the file's weights already have the model's {chans} input channel{plural}, "
                     f"so they were loaded unchanged (timm's default config for {arch} declares {declared}, "
                     "those of its own pretrained weights; nothing needed converting)")
        return False

    logger.addFilter(explain)
    try:
        yield
    finally:
        logger.removeFilter(explain)


def load_init_file(path: str | os.PathLike[str], use_ema: bool = False) -> tuple[Any, str, str]:
    """(contents, kind, sha256) of an --init-from file; kind 'halo-bench' for a halo-bench checkpoint."""
    path = Path(path).expanduser()
    obj, digest = read_weights_file_hashed(path)
    if isinstance(obj, dict) and obj.get("format") == HALO_FORMAT:
        if use_ema:
            raise HaloBenchError(f"--use-ema: {path} is a halo-bench checkpoint, which holds no EMA weights.")
        verify_content(obj, path)
        return obj, "halo-bench", digest
    return obj, "", digest


def backbone_from_file(arch: str, path: str | os.PathLike[str], in_chans: int, use_ema: bool = False
                       ) -> tuple[Any, WeightsReport, dict[str, Any] | None]:
    """A timm backbone (num_classes=0) with the file's weights; for a halo-bench checkpoint also
    its full state (so the caller can take the embedding and, for the same loss, the head)."""
    path = Path(path).expanduser()
    obj, kind, digest = load_init_file(path, use_ema)
    halo_state = None
    if kind == "halo-bench":
        halo_state = obj
        state = {k[len("backbone."):]: v for k, v in obj["model"].items() if k.startswith("backbone.")}
    else:
        state, kind = select_state_dict(obj, path, use_ema)
        if path.suffix == ".safetensors":
            kind = "safetensors"
    model, keys = create_from_state(arch, state, in_chans, num_classes=0)
    report = WeightsReport("file", str(path), str(path), digest, kind, **keys)
    return model, report, halo_state


def load_halo_parts(model: Any, state: dict[str, Any], loss: str) -> bool:
    """From a halo-bench checkpoint: the embedding when its shape fits, the head for the same loss."""
    weights = state["model"]
    same_loss = state.get("meta", {}).get("model", {}).get("loss") == loss
    loaded = False
    for prefix, module, wanted in (("embed.", model.embed, True), ("head.", model.head, same_loss)):
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        own = module.state_dict()
        if wanted and part and set(part) == set(own) and all(part[k].shape == own[k].shape for k in own):
            module.load_state_dict(part)
            loaded = loaded or prefix == "head."
    return loaded


# --------------------------------------------------------------------------- a foreign classifier

def _pre_logits_module(model: Any) -> Any:
    from torch import nn

    class PreLogitsBackbone(nn.Module):
        """A timm classifier up to its pre-logits features (pooling, and its head norm if any)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.num_features = getattr(inner, "head_hidden_size", None) or inner.num_features

        def forward(self, x: Any) -> Any:
            return self.inner.forward_head(self.inner.forward_features(x), pre_logits=True)

    return PreLogitsBackbone(model)


def file_classes_and_chans(arch: str, state: dict[str, Any]) -> tuple[int | None, int | None]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch) or get_pretrained_cfg(arch.partition(".")[0])
    if cfg is None:
        return None, None
    def first(names: Any, dim: int) -> int | None:
        for n in [names] if isinstance(names, str) else list(names or []):
            w = state.get(f"{n}.weight")
            if w is not None and w.ndim > dim:
                return int(w.shape[dim])
        return None
    return first(cfg.classifier, 0), first(cfg.first_conv, 1)
