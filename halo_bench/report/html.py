"""The HTML report: one self-contained page (no script, no stylesheet, image or font from
elsewhere, no URL but its own anchors) that a browser opens offline and that reads on a
laptop and on a phone: findings first, how the numbers were made, then per suite and model
its tables (each in a horizontal scroll box, cell for cell the markdown report's) and its
figures (SVG, full content width), with a table of contents."""

from __future__ import annotations

import html
import re
from typing import Any

from .assemble import Report
from .figure import Plot
from .findings import ADJUSTMENT_NAMES
from . import plots as _plots  # the module, not its function: looked up when drawn
from .shift import NOTES as SHIFT_NOTES
from .tables import notes_text

STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1a1a1a; background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1rem 4rem; }
h1 { font-size: 1.7rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.75rem; border-bottom: 1px solid #ddd; padding-bottom: 0.25rem; }
h3 { font-size: 1.05rem; margin: 1.75rem 0 0.5rem; }
nav ol { padding-left: 1.25rem; margin: 0.25rem 0; } nav li { margin: 0.1rem 0; }
a { color: #0b57d0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; margin: 0.25rem 0 1.5rem; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: 0.82rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.45rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0 2rem; }
.figure-box { margin: 0; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; margin-top: 0.35rem; }
.summary { font-size: 1.02rem; }
.survives { font-weight: 600; }
.warning { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.5rem 0.75rem; margin: 0.5rem 0; }
.notes { font-size: 0.88rem; color: #333; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; font-size: 0.9rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 600px) { dl { grid-template-columns: 1fr; } dd { margin-bottom: 0.4rem; } main { padding: 0.5rem; } }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"
    anchor, n = base, 2
    while anchor in taken:
        anchor, n = f"{base}-{n}", n + 1
    taken.add(anchor)
    return anchor


def _table(anchor: str, title: str, header: list[str], rows: list[list[str]]) -> str:
    parts = [f'<h3 id="{anchor}">{_e(title)}</h3>', '<div class="scroll"><table>', "<thead><tr>"
             + "".join(f"<th>{_e(cell)}</th>" for cell in header) + "</tr></thead>", "<tbody>"]
    parts += ["<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    parts.append("</tbody></table></div>")
    return "\n".join(parts)


# A figure is never drawn narrower than this share of its own width (its text would shrink below
# ~6 px on a phone): on a narrow screen it scrolls sideways in its box instead.
MIN_FIGURE_SCALE = 0.8


def _figure(anchor: str, plot: Plot) -> str:
    least = f' style="min-width: {MIN_FIGURE_SCALE * plot.width_px():.0f}px"' if plot.width_px() else ""
    return (f'<figure id="{anchor}"><div class="scroll figure-box"><img alt="{_e(plot.title)}"{least} '
            f'src="{plot.data_uri()}"></div><figcaption>{_e(plot.title)}</figcaption></figure>')


def _findings(report: Report) -> list[str]:
    out: list[str] = []
    for kind, content in report.findings.blocks(report.labels):
        if kind == "list":  # after the paragraph that introduces it
            items = [('<li class="survives">' if survives else "<li>") + f"{_e(text)} {then}</li>"
                     for text, then, survives in content]
            out[-1] += "<ul>" + "".join(items) + "</ul>"
        else:
            out.append(f'<p class="summary">{_e(content)}</p>' if kind == "summary" else f"<p>{_e(content)}</p>")
    return out


def render_html(report: Report, plots: list[Plot] | None = None) -> str:
    """The page over `report`; `plots` are its figures (drawn here when not given)."""
    plots = _plots.figures(report) if plots is None else plots
    taken: set[str] = {"contents", "findings", "provenance", "notes"}
    toc = [("findings", "Findings", 0)]
    body = ['<section id="findings"><h2>Findings</h2>', *_findings(report)]
    forests = [p for p in plots if "-forest-" in p.name]
    for plot in forests:
        anchor = _anchor(plot.name, taken)
        toc.append((anchor, f"Forest plot, {plot.data['where']}: {report.label(plot.data['loss'])} vs "
                    f"{report.label(report.baseline)}", 1))
        body.append(_figure(anchor, plot))
    body.append("</section>")
    toc.append(("provenance", "How these numbers were made", 0))
    body += ['<section id="provenance"><h2>How these numbers were made</h2><dl>']
    body += [f"<dt>{_e(what)}</dt><dd>{_e(value)}</dd>" for what, value in report.provenance.lines]
    body.append("</dl>")
    body += [f'<p class="warning"><strong>Warning:</strong> {_e(w)}</p>' for w in report.provenance.warnings]
    body.append("</section>")
    groups = list(dict.fromkeys(title.split(": ")[0].split(" (")[0] for title, _, _ in report.tables))
    for group in groups:
        anchor = _anchor(group, taken)
        toc.append((anchor, group, 0))
        body.append(f'<section id="{anchor}"><h2>{_e(group)}</h2>')
        for title, header, rows in report.tables:
            if title.split(": ")[0].split(" (")[0] == group:
                sub = _anchor(title, taken)
                toc.append((sub, title.split(": ", 1)[-1], 1))
                body.append(_table(sub, title, header, rows))
        for plot in plots:
            if plot.data.get("where") == group and plot not in forests:
                sub = _anchor(plot.name, taken)
                toc.append((sub, "Figure: " + plot.data.get("kind", plot.name), 1))
                body.append(_figure(sub, plot))
        body.append("</section>")
    toc.append(("notes", "Notes", 0))
    body.append(f'<section id="notes"><h2>Notes</h2><p class="notes">{_e(notes_text(report.findings))}</p>')
    if any("under shift" in title for title, _, _ in report.tables):
        body.append(f'<p class="notes">{_e(SHIFT_NOTES)}</p>')
    if report.left_out:
        body.append("<p>Left out of the tables:</p><ul>" + "".join(f"<li>{_e(line)}</li>" for line in report.left_out)
                    + "</ul>")
    body += [f'<p class="warning">{_e(line)}</p>' for line in report.notes]
    if not any("reliability" in plot.name for plot in plots):
        body.append('<p class="notes">No reliability diagrams: no scores file with an msp column beside the '
                    "results files.</p>")
    body.append("</section>")
    nav = ['<nav id="contents"><h2>Contents</h2><ol>']
    level = 0
    for anchor, text, depth in toc:
        if depth > level:
            nav.append("<ol>")
        elif depth < level:
            nav.append("</ol></li>")
        elif nav[-1].startswith("<li>"):
            nav[-1] += "</li>"
        nav.append(f'<li><a href="#{anchor}">{_e(text)}</a>')
        level = depth
    nav.append("</li></ol></li></ol></nav>" if level else "</li></ol></nav>")
    method = ADJUSTMENT_NAMES[report.findings.method]
    intro = (f'<p class="notes">Every loss against {_e(report.label(report.baseline))}; findings adjusted by '
             f"{_e(method)}. This page is self-contained and opens offline.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>halo-bench report</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>halo-bench report</h1>\n{intro}\n"
            + "\n".join(nav) + "\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
