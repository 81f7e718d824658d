"""Terminal output: the stderr console, the progress display of every long-running step, and
the listing tables of `halo-bench detectors`, `datasets` and `losses`.

Output must read in a terminal of any width and in a log file alike. Progress is therefore
drawn as rich bars only on an interactive terminal; anywhere else (a redirected stream, a
SLURM job, CI) it is written as plain lines, a few per task. `HALO_BENCH_PROGRESS` decides
instead of the terminal when set: `0` turns progress off, `lines` or `bars` forces a form;
`HALO_BENCH_PROGRESS_EVERY` is the longest gap, in seconds, between two lines of a task.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .errors import HaloBenchError

console = Console(stderr=True, highlight=False, soft_wrap=True)

PROGRESS_FORMS = ("0", "lines", "bars")
DEFAULT_EVERY_S = 60.0
MIN_GAP_S = 2.0  # a fast task prints its final line only, not ten lines in a second


def progress_enabled() -> bool:
    """HALO_BENCH_PROGRESS=0 turns progress off (the tests, quiet CI logs)."""
    return os.environ.get("HALO_BENCH_PROGRESS", "1") != "0"


def progress_form() -> str:
    """'bars' on an interactive terminal, 'lines' anywhere else, '0' for none."""
    chosen = os.environ.get("HALO_BENCH_PROGRESS", "").strip().lower()
    if chosen in PROGRESS_FORMS:
        return chosen
    # Asked each time (not rich's is_interactive, fixed when the console was made): stderr may
    # have been redirected since, as by a test runner or a wrapper script.
    live = console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)
    return "bars" if live else "lines"


def _every_s() -> float:
    try:
        every = float(os.environ.get("HALO_BENCH_PROGRESS_EVERY", DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S
    return every if every > 0 else DEFAULT_EVERY_S


def make_progress(enabled: bool = True) -> Progress | LineProgress:
    """The progress display of one step: rich bars on a terminal, plain lines elsewhere.

    Tasks take `unit=` (what they count: "batches", "steps", "runs") and `status=`; both
    forms show them as "odin digits: 3/10 batches". `enabled=False` inside another display
    (rich cannot nest two live displays).
    """
    form = progress_form() if enabled else "0"
    if form == "bars":
        return _Bars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
    return LineProgress(console, quiet=form == "0", every_s=_every_s())


class _Bars(Progress):
    """rich's bars; every task has the `unit` and `status` fields its columns show."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields: Any) -> Any:
        fields.setdefault("unit", "")
        fields.setdefault("status", "")
        return super().add_task(description, start, total, completed, visible, **fields)


@dataclass
class _LineTask:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float
    start_count: float
    last_line: float
    last_decile: int
    last_count: float
    finished: bool = False


class LineProgress:
    """rich.Progress's task API (add_task, update, advance, console) written as plain lines.

    A task prints a line when it has passed another tenth of its total and `MIN_GAP_S` have
    gone by since its last line, or when `every_s` have gone by and it has moved, and once when
    it completes: counts, rate, elapsed and remaining time. A task that does not move prints
    nothing (a sweep waiting on queued jobs fills no log). Never a blank line, no control code.
    """

    def __init__(self, out: Console, quiet: bool = False, every_s: float = DEFAULT_EVERY_S) -> None:
        self.console = out
        self.quiet = quiet
        self.every_s = every_s
        self._tasks: list[_LineTask] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0,
                 **fields: Any) -> int:
        now = time.monotonic()
        fields.setdefault("unit", "")
        fields.setdefault("status", "")
        self._tasks.append(_LineTask(description, total, completed, fields, now, completed, now,
                                     self._decile(completed, total), completed))
        return len(self._tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        task.fields.update({k: v for k, v in fields.items() if k not in ("visible", "refresh")})
        self._maybe_print(task)

    @staticmethod
    def _decile(completed: float, total: float | None) -> int:
        return int(10 * completed / total) if total else 0

    def _maybe_print(self, task: _LineTask) -> None:
        if self.quiet or task.finished:
            return
        now = time.monotonic()
        done = task.total is not None and task.completed >= task.total
        decile = self._decile(task.completed, task.total)
        moved = task.completed != task.last_count
        due = (decile > task.last_decile and now - task.last_line >= MIN_GAP_S) or (
            moved and now - task.last_line >= self.every_s)
        if done or due:
            task.finished = done
            task.last_line, task.last_decile, task.last_count = now, decile, task.completed
            self.console.print(self.line(task, now), markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def line(task: _LineTask, now: float) -> str:
        """e.g. 'odin digits: 3/10 batches (30%), 12.5 batches/s, 0.2 s elapsed, about 0.6 s left'."""
        unit = task.fields.get("unit") or "steps"
        count = f"{_count(task.completed)}/{_count(task.total)}" if task.total is not None else _count(task.completed)
        parts = [f"{task.description}: {count} {unit}"]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        elapsed = max(now - task.started, 1e-9)
        rate = (task.completed - task.start_count) / elapsed
        if rate > 0:
            parts.append(f"{rate:.3g} {unit}/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if task.total is not None and task.completed < task.total and rate > 0:
            parts.append(f"about {_duration((task.total - task.completed) / rate)} left")
        if task.fields.get("status"):
            parts.append(str(task.fields["status"]))
        return ", ".join(parts)


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}" if value != int(value) else str(int(value))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# --------------------------------------------------------------------------- listings

LIST_FORMATS = ("table", "json", "csv")
MIN_TEXT_WIDTH = 20  # narrower text columns read worse than one record per row


def check_list_format(fmt: str) -> str:
    if fmt not in LIST_FORMATS:
        raise HaloBenchError(f"--format must be one of {', '.join(LIST_FORMATS)}, got {fmt!r}.")
    return fmt


@dataclass(frozen=True)
class Column:
    """One column of a listing. `kind`: 'name' and 'short' cells stay on one line (a name is
    never broken or cut); 'text' cells wrap at spaces."""

    key: str
    header: str
    kind: str = "text"
    styles: Mapping[str, str] = field(default_factory=dict)  # cell value -> rich style


def stdout_console() -> Console:
    """A console on the current standard output (listings are the command's output, not chatter)."""
    return Console(highlight=False, soft_wrap=False)


def print_listing(title: str, columns: Sequence[Column], rows: Sequence[Mapping[str, str]],
                  out: Console | None = None) -> None:
    """A table when every name fits whole beside text columns of readable width; otherwise one
    record per row (name, then 'header: value' lines), which reads at any width."""
    out = out or stdout_console()
    if _table_width(columns, rows) <= out.width:
        table = Table(title=title)
        for col in columns:
            table.add_column(col.header, no_wrap=col.kind != "text", overflow="fold",
                             min_width=_longest(col, rows) if col.kind != "text" else None)
        for row in rows:
            table.add_row(*(_cell(col, row) for col in columns))
        out.print(table)
        return
    out.print(Text(title, style="bold"))
    for row in rows:
        _print_record(out, columns, row)


def _longest(col: Column, rows: Sequence[Mapping[str, str]]) -> int:
    lines = [line for row in rows for line in str(row.get(col.key, "")).splitlines()]
    return max([len(col.header), *map(len, lines)])


def _table_width(columns: Sequence[Column], rows: Sequence[Mapping[str, str]]) -> int:
    widths = []
    for col in columns:
        if col.kind == "text":
            words = [w for row in rows for w in str(row.get(col.key, "")).split()]
            widths.append(max([MIN_TEXT_WIDTH, len(col.header), *map(len, words)]))
        else:
            widths.append(_longest(col, rows))
    return sum(widths) + 3 * len(columns) + 1  # rich's default box: "│ " before each cell, " │" at the end


def _cell(col: Column, row: Mapping[str, str]) -> Text:
    value = str(row.get(col.key, ""))
    return Text(value, style=col.styles.get(value, ""))


def _print_record(out: Console, columns: Sequence[Column], row: Mapping[str, str]) -> None:
    first, *rest = columns
    out.print(Text(str(row.get(first.key, "")), style="bold"), soft_wrap=True)
    rest = [col for col in rest if str(row.get(col.key, "")).strip() not in ("", "-")]  # nothing to say
    short = [col for col in rest if col.kind != "text"]
    if short:
        line = Text("  ")
        for i, col in enumerate(short):
            line.append(("; " if i else "") + f"{col.header}: ")
            line.append_text(_cell(col, row))
        _print_hanging(out, line)
    for col in rest:
        if col.kind == "text":
            text = Text(f"  {col.header}: ")
            text.append_text(_cell(col, row))
            _print_hanging(out, text)


def _print_hanging(out: Console, text: Text) -> None:
    """Wrap at the console's width, continuation lines indented under the first."""
    print_wrapped(out, text, indent="    ")


def print_wrapped(out: Console, text: Text, indent: str = "") -> None:
    """`text` wrapped at the console's width without the trailing spaces rich leaves at each break
    (they show in a log file); continuation lines start with `indent`."""
    lines = text.wrap(out, max(out.width - len(indent), 20), overflow="fold")
    for i, line in enumerate(lines):
        line.rstrip()
        out.print(Text(indent) + line if i else line, soft_wrap=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_records(records: Sequence[Mapping[str, Any]], fmt: str, keys: Sequence[str] | None = None) -> None:
    """`records` on standard output as JSON (a list of objects) or CSV (one header line, lists joined
    by '; '), for scripts."""
    if fmt == "json":
        print_json(list(records))
        return
    keys = list(keys or (records[0].keys() if records else []))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for record in records:
        writer.writerow([_csv_value(record.get(k)) for k in keys])
    sys.stdout.write(buffer.getvalue())


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(_csv_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_csv_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
