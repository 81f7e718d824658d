"""The results format: the one contract between evaluation (which writes it) and
reporting (which reads it). Plain constants and checks, no torch."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from .core.errors import HaloBenchError

RESULTS_SCHEMA = "halo-bench/results"
RESULTS_VERSION = 2  # 2: `evaluation` and a hashed `scores_file`; version 1 files are still read
READABLE_VERSIONS = (1, 2)
RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv.gz"
RESULTS_GLOB = "results*.json"  # the default evaluation's file and every named one beside it
GROUPS = ("near", "far")
_MAX_NAME = 60


def evaluation_name(detectors: list[str] | None = None, ood: list[str] | None = None, limit: int | None = None,
                    tune: bool = False, amp: bool = True) -> str:
    """The name an evaluation's files carry: '' for the default one (every detector that
    applies, the whole suite, full splits, no --tune, default precision), else what differs,
    e.g. `det-knn-k10+odin`, `ood-noise`, `limit50`, `tune`. Evaluations with other
    settings are written beside the default one, never over it (docs/integrity.md)."""
    parts = []
    if detectors:
        parts.append("det-" + "+".join(_slug(d) for d in detectors))
    if ood:
        parts.append("ood-" + "+".join(_slug(o) for o in sorted(ood)))
    if limit is not None:
        parts.append(f"limit{limit}")
    if tune:
        parts.append("tune")
    if not amp:
        parts.append("noamp")
    name = "_".join(parts)
    if len(name) > _MAX_NAME:  # a long detector list: keep it readable, unique by its digest
        name = name[: _MAX_NAME - 11] + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def results_file(name: str) -> str:
    """`results.json` for the default evaluation, `results-NAME.json` for a named one."""
    return f"results-{name}.json" if name else RESULTS_FILE


def scores_file(name: str) -> str:
    return f"scores-{name}.csv.gz" if name else SCORES_FILE


def check_results(doc: Any, path: str | Path) -> dict[str, Any]:
    """A results.json document, or a clear error naming the file."""
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        raise HaloBenchError(f"{path}: not a halo-bench results file (no schema {RESULTS_SCHEMA!r}).")
    if doc.get("schema_version") not in READABLE_VERSIONS:
        raise HaloBenchError(f"{path}: results schema version {doc.get('schema_version')!r}; this halo-bench "
                             f"reads versions {', '.join(map(str, READABLE_VERSIONS))}. Re-run `halo-bench eval` on "
                             "its checkpoint.")
    missing = [k for k in ("run", "suite", "seed", "model", "id_metrics", "ood", "created") if k not in doc]
    if missing:
        raise HaloBenchError(f"{path}: results file lacks {', '.join(missing)}.")
    return doc


def scores_reference(doc: dict[str, Any], results_path: str | Path) -> tuple[Path, str | None]:
    """(the scores file beside a results file, the SHA-256 it must have; None for version 1
    files, which recorded none)."""
    entry = doc.get("scores_file")
    if isinstance(entry, dict):
        return Path(results_path).with_name(str(entry.get("name", SCORES_FILE))), entry.get("sha256")
    return Path(results_path).with_name(SCORES_FILE), None


# What `halo-bench report --format` writes (halo_bench/report.py renders each); named here so
# the CLI checks a format before pandas and the renderers load.
REPORT_FORMATS = ("markdown", "csv", "json", "latex", "html")


def check_report_format(fmt: str) -> None:
    from .core.errors import unknown_name

    if fmt not in REPORT_FORMATS:
        raise unknown_name("report format", fmt, REPORT_FORMATS)
