"""Atomic file writes, hashing and the environment record every output carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from .errors import HaloBenchError

_PACKAGES = ("halo-bench", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scikit-image", "pandas")


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one, even if the
    writer is killed mid-way.
    """
    path = Path(path)
    if path.is_dir():
        raise HaloBenchError(f"cannot write {path}: it is a directory; give a file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; use the usual mode
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write `path` with `writer(binary_handle)`."""
    with atomic_open(path, "wb") as handle:
        writer(handle)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def load_plain_torch_file(path: Path, kind: str, advice: str) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain data only, never arbitrary objects.

    A pickle of other objects is refused with the classes it names and `advice`; any other
    failure is reported as an unreadable `kind` ("checkpoint", "weights file").
    """
    import pickle
    import re

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        what = f" ({', '.join(found)})" if found else ""
        raise HaloBenchError(
            f"refused to load {path}: it holds pickled Python objects{what}, and unpickling them could run "
            f"code, so halo-bench never does. {advice}"
        ) from None
    except Exception as exc:  # torch.load fails on garbage with many exception types
        raise HaloBenchError(
            f"{path} is not a readable {kind} (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages whose behaviour the numbers depend on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
