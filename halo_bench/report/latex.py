"""LaTeX (booktabs) rendering of `report.tables()` output, the better value per row in bold.

"Better" follows each metric's direction (report.ID_METRICS / OOD_HEADLINE: higher or lower
is better); it compares the loss columns' means (the number before ±) within each block
of loss columns, never the Δ columns. Ties are all bold.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)")
_REPLACE = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
            ("{", r"\{"), ("}", r"\}"), ("$", r"\$"), ("~", r"\textasciitilde{}"), ("^", r"\^{}"))
_SYMBOLS = (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("−", "$-$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"),
            ("–", "--"))


def escape(text: str) -> str:
    for char, repl in _REPLACE:
        text = text.replace(char, repl)
    for char, repl in _SYMBOLS:
        text = text.replace(char, repl)
    return text


def _value(cell: str) -> float | None:
    match = _NUMBER.match(cell)
    return float(match.group(1)) if match else None


def _direction(title: str, header_cell: str, row_label: str) -> bool | None:
    """True if higher is better, False if lower, None if the column says nothing."""
    from .tidy import OOD_HEADLINE

    for label, higher in OOD_HEADLINE.values():
        if header_cell.startswith(label.split(" ")[0] + " "):  # per-set table: "AUROC CCE"
            return higher
    for text in (row_label, title):
        if "↑" in text:
            return True
        if "↓" in text:
            return False
    return None


def best_cells(title: str, header: list[str], rows: list[list[str]], losses: list[str]) -> set[tuple[int, int]]:
    """(row, column) of the better loss value per row and block of loss columns.

    `losses`: the loss column labels; a header cell is a loss column when it is a label,
    optionally after a prefix ("near CCE", "AUROC CCE"); Δ columns never count.
    """
    blocks: dict[str, list[int]] = {}
    for col, cell in enumerate(header):
        if "Δ" in cell:
            continue
        for label in sorted(losses, key=len, reverse=True):
            if cell == label or cell.endswith(" " + label):
                blocks.setdefault(cell[: len(cell) - len(label)], []).append(col)
                break
    best = set()
    for r, row in enumerate(rows):
        for prefix, cols in blocks.items():
            higher = _direction(title, header[cols[0]], row[0])
            values = {c: _value(row[c]) for c in cols if c < len(row)}
            values = {c: v for c, v in values.items() if v is not None}
            if higher is None or len(values) < 2:
                continue
            target = max(values.values()) if higher else min(values.values())
            best |= {(r, c) for c, v in values.items() if v == target}
    return best


def render_table(title: str, header: list[str], rows: list[list[str]], losses: list[str]) -> str:
    bold = best_cells(title, header, rows, losses)
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{escape(title)}}}",
             "\\begin{tabular}{" + "l" * min(len(header), 3 if header and header[0] == "OOD set" else 1)
             + "r" * (len(header) - min(len(header), 3 if header and header[0] == "OOD set" else 1)) + "}",
             "\\toprule", " & ".join(escape(cell) for cell in header) + " \\\\", "\\midrule"]
    for r, row in enumerate(rows):
        cells = [f"\\textbf{{{escape(cell)}}}" if (r, c) in bold else escape(cell) for c, cell in enumerate(row)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)
