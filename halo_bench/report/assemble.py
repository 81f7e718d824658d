"""Everything a report shows, computed once and handed to every format: the runs kept and left
out, the tidy table, the Δ cells with their intervals and p-values, the findings that survive
the multiple-comparisons control, the tables, the provenance and the notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..core.errors import HaloBenchError
from .deltas import compute_deltas
from .findings import ALPHA, Findings, report_findings, survivor_keys
from .provenance import Provenance, provenance
from .shift import shift_section
from .tables import integrity_notes, tables
from .tidy import DEFAULT_BASELINE, UNFINISHED, select, tidy

Table = tuple[str, list[str], list[list[str]]]


@dataclass
class Report:
    results: list[dict[str, Any]]
    left_out: list[str]
    baseline: str
    table: pd.DataFrame  # tidy.tidy
    deltas: pd.DataFrame  # deltas.compute_deltas
    findings: Findings
    tables: list[Table]  # the clean tables, then (with eval --shift results) the shift tables
    provenance: Provenance
    notes: list[str]  # integrity notes: evaluations left out, scores files that do not belong
    shift_cells: pd.DataFrame  # shift.summarise: the shift tables' cells (empty without eval --shift results)

    @property
    def labels(self) -> dict[str, str]:
        return self.table.attrs.get("labels", {})

    def label(self, loss: str) -> str:
        return self.labels.get(loss, loss)


def build_report(results: list[dict[str, Any]], baseline: str | None = None, include_incomplete: bool = False,
                 adjust: str = "bh", alpha: float = ALPHA) -> Report:
    """The report over `results` against `baseline` (a loss tag; default `cce`); partial and
    unfinished runs are left out (tidy.select) and listed. A baseline no kept run has is an
    error naming the losses there are (a report of one loss needs none)."""
    kept, left_out = select(results, include_incomplete)
    table = tidy(kept)
    baseline = _baseline(baseline, list(dict.fromkeys(table["loss"])), table.attrs["labels"])
    deltas = compute_deltas(table, baseline)
    found = report_findings(deltas, baseline, adjust, alpha)
    shifted, shift_cells = shift_section(kept, baseline, include_incomplete=True)
    shown = tables(table, baseline, deltas, survivor_keys(found)) + shifted
    return Report(kept, left_out, baseline, table, deltas, found, shown, provenance(kept, table),
                  integrity_notes(table), shift_cells)


def _baseline(asked: str | None, losses: list[str], labels: dict[str, str]) -> str:
    """The loss tag to compare with: as asked (default cce), also where --include-incomplete
    labelled it `TAG [unfinished]`; a report of one loss needs none."""
    wanted = asked or DEFAULT_BASELINE
    for loss in losses:
        if loss == wanted or loss == f"{wanted} {UNFINISHED}":
            return loss
    if asked is None and len(losses) == 1:
        return wanted
    names = ", ".join(f"{loss} ({labels.get(loss, loss)})" for loss in losses)
    what = f"--baseline {asked!r} matches no run in the report" if asked else \
        f"the default baseline {DEFAULT_BASELINE!r} matches no run in the report"
    raise HaloBenchError(f"{what}; the losses found are: {names}. Pass one of them as --baseline (a run folder's "
                         "loss part, e.g. cce or cce+ls0.1).")
