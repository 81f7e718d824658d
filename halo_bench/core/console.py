"""One stderr console and progress-bar factory for every long-running step."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_enabled() -> bool:
    """Bars animate on a terminal; HALO_BENCH_PROGRESS=0 turns them off (CI logs)."""
    return os.environ.get("HALO_BENCH_PROGRESS", "1") != "0"


def make_progress(enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and progress_enabled()),
    )
