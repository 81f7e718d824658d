"""The report in each format (markdown, CSV, JSON, LaTeX, HTML with figures), every one
rendered from one `assemble.Report`: findings first, then how the numbers were made, the
tables, and the notes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..losses import LOSSES
from ..results import REPORT_FORMATS, check_report_format
from .assemble import Report, build_report
from .latex import escape
from .latex import render_table as render_latex_table
from .shift import NOTES as SHIFT_NOTES
from .tables import notes_text
from .tidy import KEYS, aggregate


def findings_lines(report: Report) -> list[str]:
    """The findings section as markdown lines (`Findings.blocks`): the family's counts, then the
    differences that survive the adjustment, and apart those that exclude zero before it only."""
    lines: list[str] = []
    for kind, content in report.findings.blocks(report.labels):
        lines += [""] if lines else []
        if kind == "list":
            lines += [f"- **{text}** {then}" if survives else f"- {text} {then}" for text, then, survives in content]
        else:
            lines.append(content)
    return lines


def provenance_lines(report: Report) -> list[str]:
    lines = [f"- {what}: {value}" for what, value in report.provenance.lines]
    lines += [f"- **warning:** {warning}" for warning in report.provenance.warnings]
    return lines


def _render_markdown(report: Report) -> str:
    parts = ["# halo-bench report", "", "## Findings", "", *findings_lines(report), "",
             "## How these numbers were made", "", *provenance_lines(report), ""]
    for title, header, rows in report.tables:
        parts += [f"## {title}", "", tabulate(rows, header, tablefmt="github", disable_numparse=True), ""]
    parts += ["## Notes", "", notes_text(report.findings), ""]
    if any("under shift" in title for title, _, _ in report.tables):
        parts += [SHIFT_NOTES, ""]
    if report.left_out:
        parts += ["Left out of the tables:", "", *(f"- {line}" for line in report.left_out), ""]
    parts += [f"{line}\n" for line in report.notes]
    return "\n".join(parts)


def _render_latex(report: Report) -> str:
    parts = ["% halo-bench report; needs \\usepackage{booktabs}"]
    parts += [f"% left out: {line}" for line in report.left_out]
    parts += [f"% {what}: {value}" for what, value in report.provenance.lines]
    parts += [f"% warning: {warning}" for warning in report.provenance.warnings]
    parts += ["% bold: the better loss value per row (each metric's direction); " + notes_text(report.findings)]
    parts.append(_latex_findings(report))
    labels = list(report.labels.values()) + list(dict.fromkeys(report.table["loss"]))
    labels += [spec.label for spec in LOSSES.values()]
    for title, header, rows in report.tables:
        parts.append(render_latex_table(title, header, rows, labels))
    return "\n".join(parts)


def _latex_findings(report: Report) -> str:
    """The findings as their own table: every difference that excludes 0, survivors first."""
    found = report.findings
    caption = " ".join(["Findings: " + found.summary(), found.bootstrap_note() or ""]).strip()
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{escape(caption)}}}",
             "\\begin{tabular}{llrrrl}", "\\toprule",
             "comparison & cell & $\\Delta$ & 95\\% interval & adjusted $p$ & survives \\\\", "\\midrule"]
    for c in found.findings:
        d = c.decimals
        lines.append(" & ".join([escape(f"{report.label(c.loss)} vs {report.label(c.baseline)}"), escape(c.what),
                                 f"${c.delta:+.{d}f}$", f"$[{c.lo:+.{d}f}, {c.hi:+.{d}f}]$",
                                 f"{c.p_adjusted:.3g}", "yes" if c.survives else "no"]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _frame(report: Report) -> pd.DataFrame:
    """Every cell with its mean, std, seeds and Δ, interval, p-values and the survivors; then,
    with `eval --shift` results, the shift tables' cells (`section` shift, with `shift` set and
    `severity`)."""
    out = aggregate(report.table).merge(report.deltas, on=[*KEYS, "loss"], how="left")
    family = {c.key: c for c in report.findings.cells}
    keys = list(zip(*(out[k] for k in [*KEYS, "loss"]), strict=True))
    out["tested"] = [k in family for k in keys]
    out["p_adjusted"] = [family[k].p_adjusted if k in family else float("nan") for k in keys]
    out["survives"] = [family[k].survives if k in family else False for k in keys]
    out.insert(0, "section", "clean")
    if not report.shift_cells.empty:
        shift = report.shift_cells.rename(columns={"shift": "dataset"}).assign(section="shift", tested=False,
                                                                                survives=False)
        shift["excludes_zero"] = (shift["delta_lo"] > 0) | (shift["delta_hi"] < 0)
        shift["interval"] = np.where(shift["pairs"].fillna(0) > 1, "t over seeds", "none")
        out = pd.concat([out, shift], ignore_index=True)
    return out


def _render_csv(report: Report) -> str:
    return _frame(report).to_csv(index=False)


def _render_json(report: Report) -> str:
    records = json.loads(_frame(report).to_json(orient="records"))
    runs = [{"path": r["_path"], "run": r["run"], "checkpoint_sha256": r["checkpoint"]["sha256"]}
            for r in report.results]
    found = report.findings
    findings = {"method": found.method, "alpha": found.alpha, "tested": found.tested, "unadjusted": found.unadjusted,
                "survived": found.survived, "expected_by_chance": found.expected_by_chance,
                "bootstrapped": found.bootstrapped,
                "cells": [{"loss": c.loss, "baseline": c.baseline, "what": c.what, "metric": c.metric, **c.keys,
                           "delta": c.delta, "lo": c.lo, "hi": c.hi, "interval": c.interval, "p": c.p,
                           "p_adjusted": c.p_adjusted, "excludes_zero": c.excludes_zero, "survives": c.survives,
                           "sentence": c.sentence(report.labels)} for c in found.cells]}
    return json.dumps({"schema": "halo-bench/report", "baseline": report.baseline, "findings": findings,
                       "provenance": dict(report.provenance.lines), "warnings": report.provenance.warnings,
                       "runs": runs, "left_out": report.left_out, "notes": report.notes, "rows": records},
                      indent=2) + "\n"


def _render_html(report: Report, plots: list[Any] | None = None) -> str:
    from .html import render_html  # imports matplotlib: only when HTML is asked for

    return render_html(report, plots)


FORMATS: dict[str, Callable[..., str]] = {
    "markdown": _render_markdown,
    "csv": _render_csv,
    "json": _render_json,
    "latex": _render_latex,
    "html": _render_html,
}


assert tuple(FORMATS) == REPORT_FORMATS


def render(results: list[dict[str, Any]], fmt: str = "markdown", baseline: str | None = None,
           include_incomplete: bool = False, adjust: str = "bh") -> str:
    """The report over `results` in `fmt`, every loss compared with `baseline` (a loss tag;
    default `cce`), findings adjusted by `adjust` (bh, holm or none). Partial and unfinished
    runs are left out and listed."""
    check_report_format(fmt, adjust)
    return render_report(build_report(results, baseline, include_incomplete, adjust), fmt)


def render_report(report: Report, fmt: str, plots: list[Any] | None = None) -> str:
    """`report` in `fmt`; HTML takes its figures from `plots` when given (drawn once for the
    page and `--plots`)."""
    return FORMATS[fmt](report, plots) if fmt == "html" else FORMATS[fmt](report)
