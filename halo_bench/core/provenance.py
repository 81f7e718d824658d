"""What produced an output: the package version, the command line and the source commit."""

from __future__ import annotations

import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

__version__ = "0.2.0"

_command: str | None = None


def set_command(argv: list[str]) -> None:
    """Record the command line this process runs (`halo-bench ...`), for results and reports."""
    global _command
    _command = shlex.join(["halo-bench", *argv])


def command_line() -> str | None:
    """The `halo-bench ...` command line of this process; None when the library was called directly."""
    return _command


@lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of the halo-bench source, with `+dirty` for uncommitted changes, where the
    package runs from a git checkout (an editable install); None otherwise."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) if commit else None
