"""The results format: the one contract between evaluation (which writes it) and
reporting (which reads it). Plain constants and checks, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import HaloBenchError

RESULTS_SCHEMA = "halo-bench/results"
RESULTS_VERSION = 1
RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv.gz"
GROUPS = ("near", "far")


def check_results(doc: Any, path: str | Path) -> dict[str, Any]:
    """A results.json document, or a clear error naming the file."""
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        raise HaloBenchError(f"{path}: not a halo-bench results file (no schema {RESULTS_SCHEMA!r}).")
    if doc.get("schema_version") != RESULTS_VERSION:
        raise HaloBenchError(f"{path}: results schema version {doc.get('schema_version')!r}; this halo-bench "
                             f"reads version {RESULTS_VERSION}. Re-run `halo-bench eval` on its checkpoint.")
    missing = [k for k in ("run", "suite", "seed", "model", "id_metrics", "ood", "created") if k not in doc]
    if missing:
        raise HaloBenchError(f"{path}: results file lacks {', '.join(missing)}.")
    return doc


# What `halo-bench report --format` writes (halo_bench/report.py renders each); named here so
# the CLI checks a format before pandas and the renderers load.
REPORT_FORMATS = ("markdown", "csv", "json", "latex", "html")


def check_report_format(fmt: str) -> None:
    from .errors import unknown_name

    if fmt not in REPORT_FORMATS:
        raise unknown_name("report format", fmt, REPORT_FORMATS)
