"""Atomic file writes, content hashes, run-folder locks and the environment record every
output carries (docs/integrity.md states what they guarantee)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from .errors import HaloBenchError

_PACKAGES = ("halo-bench", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scikit-image", "pandas")


# Errors of a full disk or quota: reported as one line naming the file, not a traceback.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_HOST = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname())[:40] or "host"


def _tmp_prefix(path: Path) -> str:
    """Temporary files are named `.NAME.HOST.PID.*.tmp`, so a later writer can tell one left
    by a killed process (same host, pid gone) from one a live writer is filling."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete `path`'s temporary files left by killed writers on this host; returns them."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(_HOST)}\.(\d+)\..*\.tmp$")
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.match(candidate.name)
        if match and not pid_alive(int(match.group(1))):
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError:
                pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one, even if the
    writer is killed mid-way; temporaries of killed writers are removed by the next
    write of `path`. A full disk is reported as a HaloBenchError naming the file,
    with the earlier file left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise HaloBenchError(f"cannot write {path}: it is a directory; give a file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; use the usual mode
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            kept = f"the earlier {path.name} is intact" if path.exists() else "no partial file was left"
            raise HaloBenchError(f"could not write {path}: {exc.strerror or 'no space left on device'}; "
                                 f"nothing was replaced ({kept}). Free some space and run the command "
                                 "again.") from None
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def torch_bytes(obj: Any) -> bytes:
    """`torch.save(obj)` into memory: the bytes are then written (and hashed) as they are,
    and a full disk fails on a plain write with its errno rather than inside torch's writer."""
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
    return read_plain_torch_file(path, kind, advice)[0]


def read_plain_torch_file(path: Path, kind: str, advice: str) -> tuple[Any, str]:
    """(`load_plain_torch_file`'s object, the SHA-256 of the bytes it was loaded from).

    The file is read once: the hash names exactly what was loaded, even if another
    process replaces the file meanwhile.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return load_plain_torch_bytes(data, path, kind, advice), hashlib.sha256(data).hexdigest()


def load_plain_torch_bytes(data: bytes, path: Path, kind: str, advice: str) -> Any:
    """`load_plain_torch_file` on bytes already read from `path` (named in messages)."""
    import io as _io
    import pickle

    import torch

    try:
        return torch.load(_io.BytesIO(data), map_location="cpu", weights_only=True)
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


def content_digest(obj: Any) -> str:
    """SHA-256 of a nest of dicts, lists, tensors and plain values, independent of how it was
    serialised: what a file's own recorded digest is checked against after loading."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, dict):
        digest.update(b"{")
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode() + b":")
            _feed(digest, obj[key])
        digest.update(b"}")
    elif isinstance(obj, (list, tuple)):
        digest.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _feed(digest, item)
            digest.update(b",")
        digest.update(b"]")
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif hasattr(obj, "detach") and hasattr(obj, "dtype"):  # a tensor: dtype, shape and raw bytes
        import torch

        tensor = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor:{tensor.dtype}:{tuple(obj.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


CONTENT_KEY = "content_sha256"  # where a file records the digest of its own content


def verify_content(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Check (and remove) the content digest a checkpoint recorded when it was written; files
    written before halo-bench recorded one have none and are read unchecked."""
    recorded = state.pop(CONTENT_KEY, None)
    if recorded is not None and recorded != content_digest(state):
        raise HaloBenchError(
            f"{path} is corrupt: its content does not match the digest recorded when it was written "
            "(a damaged copy or disk?). Copy it again from its source, or retrain the run with --force."
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages whose behaviour the numbers depend on."""
    from .provenance import __version__, source_commit

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    # The running code's own version (an editable install's metadata keeps the version it was installed at).
    out["halo-bench"] = __version__
    commit = source_commit()
    if commit:
        out["halo-bench commit"] = commit
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


LOCK_FILE = ".halo-bench.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str, lock_name: str = LOCK_FILE,
                wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock on `folder` while this process writes it.

    The lock is the kernel's (`flock`), so it dies with its process: a lock left by a
    killed process is free and is taken over, with a note. A second writer gets a
    HaloBenchError naming the holder (pid, host, command, since when), or with `wait`
    blocks until it is free. Where the file system has no locks, a warning says so and
    the work goes on unlocked.
    """
    import fcntl

    folder = Path(folder)
    path = folder / lock_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115  (held for the whole block)
    except OSError as exc:
        _lock_write_failed(exc, path)
        raise
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise HaloBenchError(f"{folder} is being written by another halo-bench process "
                                 f"({_holder(path)}); wait for it to finish, or use another --out.") from None
        except OSError as exc:
            _warn(f"cannot lock {folder} ({exc.strerror}); going on without a lock.")
            yield
            return
        handle.seek(0)
        previous = handle.read().strip()
        if previous:  # a holder that never released it: killed
            _warn(f"took over the lock of {folder} left by a process that ended without releasing it "
                  f"({_holder(path, previous)}).")
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                     "command": " ".join(sys.argv), "since": utc_now()}) + "\n")
            handle.flush()
        except OSError as exc:
            _release(handle, folder, path)
            _lock_write_failed(exc, path)
            raise
        try:
            yield
        finally:
            _release(handle, folder, path)
    finally:
        try:
            handle.close()
        except OSError:  # a buffer that a full disk would not take: the lock file holds nothing that matters
            pass


def _release(handle: IO[Any], folder: Path, path: Path) -> None:
    """Empty the lock file (best effort: a full disk must not hide the real error), remove it
    where the folder holds nothing else, and release the lock."""
    import fcntl

    try:
        handle.seek(0)
        handle.truncate()
        handle.flush()
    except OSError:
        pass
    _remove_if_only(folder, path)  # nothing was written (e.g. the run failed to build)
    fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_write_failed(exc: OSError, path: Path) -> None:
    """A full disk while taking a folder's lock: one message naming the file (nothing else was
    written yet); other errors go on up."""
    if exc.errno in _NO_SPACE:
        raise HaloBenchError(f"could not write {path}: {exc.strerror or 'no space left on device'}; nothing "
                             f"in {path.parent} was changed. Free some space and run the command again.") from None


def _remove_if_only(folder: Path, lock: Path) -> None:
    try:
        if [p.name for p in folder.iterdir()] == [lock.name]:
            lock.unlink()
            folder.rmdir()
    except OSError:
        pass


def _holder(path: Path, text: str | None = None) -> str:
    try:
        info = json.loads(text if text is not None else path.read_text())
        return (f"pid {info['pid']} on {info['host']}, {info['what']}: `{info['command']}`, "
                f"since {info['since']}")
    except (OSError, ValueError, KeyError, TypeError):
        return f"see {path}"


def _warn(message: str) -> None:
    from .console import console

    console.print(f"warning: {message}", markup=False)
