"""How a report's numbers were made: command, date, versions, device and threads, seeds per
loss, suite and data root; and warnings where the runs of one table differ in any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.io import utc_now
from ..core.provenance import __version__, command_line, source_commit

# The versions whose difference between runs of one table is worth a warning.
KEY_PACKAGES = ("halo-bench", "torch", "torchvision", "timm")


@dataclass
class Provenance:
    lines: list[tuple[str, str]]  # (what, value), in reading order
    warnings: list[str] = field(default_factory=list)


def _values(results: list[dict[str, Any]], get: Any) -> list[str]:
    out = []
    for res in results:
        try:
            value = get(res)
        except (KeyError, TypeError, AttributeError):
            value = None
        out.append("unknown" if value in (None, "") else str(value))
    return out


def _summary(values: list[str]) -> str:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "; ".join(f"{v} ({values.count(v)} runs)" for v in distinct)


def provenance(results: list[dict[str, Any]], table: Any) -> Provenance:
    """What produced the report over `results` (the runs it keeps) and `table` (their tidy table)."""
    commit = source_commit()
    lines = [("report made", utc_now()),
             ("report command", command_line() or "(called from Python)"),
             ("halo-bench", __version__ + (f", commit {commit}" if commit else ""))]
    warnings = []
    checks = [
        ("evaluated with halo-bench", _evaluated_with),
        *((f"{pkg}", lambda r, pkg=pkg: r["versions"][pkg]) for pkg in KEY_PACKAGES[1:]),
        ("device", lambda r: r["versions"].get("gpu") or r.get("device")),
        ("torch threads", lambda r: r["versions"]["torch_threads"]),
        ("suite", lambda r: r["suite"]),
        ("data root", lambda r: r.get("data_root")),
        ("evaluation command", lambda r: r.get("command")),
    ]
    for what, get in checks:
        values = _values(results, get)
        lines.append((what, _summary(values)))
        known = {v for v in values if v != "unknown"}
        if len(known) > 1 and what not in ("data root", "evaluation command", "suite"):
            warnings.append(f"the runs were made with different {what}: {_summary(values)}; differences between "
                            "losses may come from that, not from the losses.")
    warnings += _detector_warnings(results)
    labels = table.attrs.get("labels", {})
    for (suite, model), part in table.groupby(["suite", "model"], sort=False):
        seeds = {loss: sorted({int(s) for s in part[part["loss"] == loss]["seed"]}) for loss in dict.fromkeys(part["loss"])}
        lines.append((f"seeds, {suite} / {model}",
                      "; ".join(f"{labels.get(loss, loss)}: {','.join(map(str, s))}" for loss, s in seeds.items())))
        if len({tuple(s) for s in seeds.values()}) > 1:
            warnings.append(f"{suite} / {model}: the losses were run with different seeds ("
                            + "; ".join(f"{labels.get(loss, loss)} {','.join(map(str, s))}" for loss, s in seeds.items())
                            + "); Δ columns pair only the seeds both have, and say how many.")
    return Provenance(lines, warnings)


def _evaluated_with(result: dict[str, Any]) -> str:
    """The halo-bench version an evaluation ran, with its source commit where it was recorded (an
    unreleased version changes between commits)."""
    versions = result["versions"]
    commit = versions.get("halo-bench commit")
    return versions["halo-bench"] + (f", commit {commit}" if commit else "")


def _detector_warnings(results: list[dict[str, Any]]) -> list[str]:
    """Detectors (other than the ones only a HALO head has) that some runs lack, or whose settings
    differ between runs."""
    # HALO's own detectors exist on HALO runs only; NAME[tuned] settings differ by design (chosen per run).
    # A run's several evaluations (eval --detectors after a bench) count together, newest first.
    runs: dict[Any, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: str(r.get("created", "")), reverse=True):
        # one run: one folder (run names repeat across --out folders and recipes)
        where = str(Path(r["_path"]).parent) if r.get("_path") else (r.get("suite"), r.get("run"), r.get("seed"))
        mine = runs.setdefault(where, {})
        for d, s in (r.get("detectors") or {}).items():
            if not s.get("halo_only") and "[tuned]" not in d:
                mine.setdefault(d, s)
    per_run = list(runs.values())
    names = set().union(*per_run) if per_run else set()
    out = []
    missing = sorted(d for d in names if any(d not in run for run in per_run))
    if missing:
        out.append(f"detector(s) {', '.join(missing)} were evaluated on some runs only; their rows average fewer "
                   "runs (the cells say so).")
    differing = sorted(d for d in names if len({str(run[d].get("params")) for run in per_run if d in run}) > 1)
    if differing:
        out.append(f"detector(s) {', '.join(differing)} ran with different settings on different runs.")
    return out
