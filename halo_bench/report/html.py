"""The HTML report: one self-contained file (tables, notes and every figure embedded as a
base64 PNG; no script, no stylesheet or image from elsewhere, no URL) that a browser opens
offline. Its tables are `tables.tables()`, cell for cell the markdown report's; its
figures are `plots.figures()`, drawn from the same runs.
"""

from __future__ import annotations

import html
from typing import Any

from . import tables

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
.notes { font-size: 0.9em; color: #333; max-width: 70em; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=False)


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    parts = [f"<table>\n<caption>{_e(title)}</caption>", "<thead><tr>"
             + "".join(f"<th>{_e(cell)}</th>" for cell in header) + "</tr></thead>", "<tbody>"]
    parts += ["<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    parts.append("</tbody>\n</table>")
    return "\n".join(parts)


def render_html(results: list[dict[str, Any]], baseline: str, left_out: list[str]) -> str:
    from .plots import figures

    table = tables.tidy(results)
    body = ["<h1>halo-bench report</h1>",
            '<p class="notes">Tables first (the markdown report\'s, cell for cell), then the figures. '
            "This file is self-contained: it opens offline in any browser.</p>", "<h2>Tables</h2>"]
    for title, header, rows in tables.tables(table, baseline):
        body.append(_table(title, header, rows))
    body.append(f'<p class="notes">{_e(tables.NOTES)}</p>')
    if left_out:
        body.append("<p>Left out of the tables:</p>\n<ul>" + "".join(f"<li>{_e(line)}</li>" for line in left_out)
                    + "</ul>")
    body += [f"<p>{_e(line)}</p>" for line in tables.integrity_notes(table)]
    plots = figures(table, baseline)
    body.append("<h2>Figures</h2>")
    if not any("reliability" in plot.name for plot in plots):
        body.append('<p class="notes">No reliability diagrams: no scores.csv.gz with an msp column beside the '
                    "results.json files.</p>")
    for plot in plots:
        body.append(f'<figure id="{_e(plot.name)}"><img alt="{html.escape(plot.title)}" src="{plot.data_uri()}">'
                    f"<figcaption>{_e(plot.title)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>halo-bench report</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
