"""The report in each format (markdown, CSV, JSON, LaTeX, HTML with figures), every one
rendered from `tables`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..losses import LOSSES
from ..results import REPORT_FORMATS, check_report_format
from .latex import render_table as render_latex_table
from .tables import (
    DEFAULT_BASELINE,
    KEYS,
    NOTES,
    aggregate,
    integrity_notes,
    paired_differences,
    select,
    tables,
    tidy,
    with_bootstrap,
)


def _render_markdown(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    table = tidy(results)
    parts = ["# halo-bench report", ""]
    for title, header, rows in tables(table, baseline):
        parts += [f"## {title}", "", tabulate(rows, header, tablefmt="github", disable_numparse=True), ""]
    parts += [NOTES, ""]
    if left_out:
        parts += ["Left out of the tables:", "", *(f"- {line}" for line in left_out), ""]
    parts += [f"{line}\n" for line in integrity_notes(table)]
    return "\n".join(parts)




def _render_latex(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    parts = ["% halo-bench report; needs \\usepackage{booktabs}"]
    parts += [f"% left out: {line}" for line in left_out]
    parts += ["% bold: the better loss value per row (each metric's direction); " + NOTES]
    table = tidy(results)
    labels = list(table.attrs.get("labels", {}).values()) + list(dict.fromkeys(table["loss"]))
    labels += [spec.label for spec in LOSSES.values()]
    for title, header, rows in tables(table, baseline):
        parts.append(render_latex_table(title, header, rows, labels))
    return "\n".join(parts)


def _with_deltas(results: list[dict[str, Any]], baseline: str) -> pd.DataFrame:
    table = tidy(results)
    deltas = with_bootstrap(paired_differences(table, baseline), table, baseline)
    return aggregate(table).merge(deltas, on=[*KEYS, "loss"], how="left")


def _render_csv(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    return _with_deltas(results, baseline).to_csv(index=False)


def _render_json(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    agg = _with_deltas(results, baseline)
    records = json.loads(agg.to_json(orient="records"))
    runs = [{"path": r["_path"], "run": r["run"], "checkpoint_sha256": r["checkpoint"]["sha256"]} for r in results]
    return json.dumps({"schema": "halo-bench/report", "baseline": baseline, "runs": runs, "left_out": left_out,
                       "rows": records}, indent=2) + "\n"


def _render_html(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    from .html import render_html  # imports matplotlib: only when HTML is asked for

    return render_html(results, baseline, left_out)


FORMATS: dict[str, Callable[[list[dict[str, Any]], str, list[str]], str]] = {
    "markdown": _render_markdown,
    "csv": _render_csv,
    "json": _render_json,
    "latex": _render_latex,
    "html": _render_html,
}


assert tuple(FORMATS) == REPORT_FORMATS


def render(results: list[dict[str, Any]], fmt: str = "markdown", baseline: str = DEFAULT_BASELINE,
           include_incomplete: bool = False) -> str:
    """The report over `results` in `fmt`, every loss compared with `baseline` (a loss tag).

    Partial and unfinished runs are left out (see `select`) and listed.
    """
    check_report_format(fmt)
    kept, left_out = select(results, include_incomplete)
    return FORMATS[fmt](kept, baseline, left_out)
