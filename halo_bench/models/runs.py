"""Run folders on disk: finding a checkpoint from what a user typed. No torch."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import HaloBenchError

CHECKPOINT_FILE = "ckpt.pt"


def run_folders(root: Path, limit: int = 200) -> list[Path]:
    """Folders under `root` (at any depth) that hold a checkpoint, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if CHECKPOINT_FILE in files:
            found.append(Path(folder))
            if len(found) >= limit:
                break
    return sorted(found)


def _listing(root: Path) -> str:
    runs = run_folders(root)
    if not runs:
        return ""
    shown = "\n".join(f"  {run / CHECKPOINT_FILE}" for run in runs[:20])
    more = f"\n  ... and {len(runs) - 20} more" if len(runs) > 20 else ""
    return f" Checkpoints under {root}:\n{shown}{more}"


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint a path names: the file itself, or `ckpt.pt` inside a run folder.

    When neither exists, the error lists the checkpoints it can see nearby, so a user
    who typed a parent folder finds the run they meant.
    """
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise HaloBenchError(f"{path} is a folder without a {CHECKPOINT_FILE}.{_listing(path)}")
    if path.is_file():
        return path
    parent = next((p for p in path.parents if p.is_dir()), Path("."))
    raise HaloBenchError(f"checkpoint {path} does not exist.{_listing(parent) if parent != Path('/') else ''}")
