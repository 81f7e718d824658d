"""A report figure: a matplotlib Figure with its file name, caption and what it draws, rendered
once to SVG (the HTML page and `--plots`) and to PDF (`--plots`). matplotlib is not imported
here: a figure module imports it when it draws."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from typing import Any

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Plot:
    name: str  # file stem: letters, digits, '-', '_'
    title: str  # the caption: says only what is drawn
    figure: Any  # None once rendered in a worker process: its SVG (and PDF) came back instead
    data: dict[str, Any] = field(default_factory=dict)  # what was drawn, for tests and captions
    _svg: bytes | None = None
    _pdf: bytes | None = None

    def svg(self) -> bytes:
        """The figure as SVG, rendered once (the HTML page and --plots share it)."""
        if self._svg is None:
            self._svg = _render(self.figure, "svg")
        return self._svg

    def pdf(self) -> bytes:
        if self._pdf is None:
            self._pdf = _render(self.figure, "pdf")
        return self._pdf

    def width_px(self) -> float:
        """The SVG's own width in CSS pixels (matplotlib writes it in points, 96 px per 72 pt)."""
        found = re.search(rb'<svg[^>]*?\swidth="([0-9.]+)(pt|px)?"', self.svg()[:4096])
        if not found:
            return 0.0
        return float(found.group(1)) * (96 / 72 if found.group(2) in (None, b"pt") else 1.0)

    def data_uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg()).decode("ascii")


def _render(figure: Any, fmt: str) -> bytes:
    assert figure is not None, "a figure rendered elsewhere was asked for a format it was not rendered to"
    buffer = io.BytesIO()
    meta = {"Date": None, "Creator": None} if fmt == "svg" else {"Creator": None, "Producer": None,
                                                                 "CreationDate": None}
    figure.savefig(buffer, format=fmt, metadata=meta)
    return buffer.getvalue()


def slug(*parts: str) -> str:
    """A file stem of letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "-".join(parts)).strip("_")




def new_figure(width: float, height: float, **kwargs: Any) -> Any:
    """A matplotlib Figure on the Agg backend (no pyplot state, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kwargs)
