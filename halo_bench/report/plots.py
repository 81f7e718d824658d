"""The report's figures, drawn with matplotlib (Agg, no pyplot state) from the same runs as its tables.

- reliability diagrams per loss, pooled over seeds, from scores.csv.gz: the ID rows' `msp`
  column is the top-label probability metrics.id_metrics computes ECE from (the K-class
  argmax's probability under the full softmax) and `pred == label` is correctness; 15
  equal-width bins (lo, hi] as metrics.ece;
- per-seed values as dots beside each loss's mean (acc, ECE, near/far AUROC and FPR@95 per
  detector), from the results.json numbers the tables show, with the published reference
  numbers of the suite (published.yaml) as stars where they apply;
- ID-vs-OOD score histograms per detector and OOD set (pooled over seeds);
- ROC curves (ID positive) per detector and OOD set, one line per run.

Import this module only when figures are asked for: it imports matplotlib.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..core.errors import HaloBenchError  # noqa: E402
from ..core.io import atomic_write_bytes  # noqa: E402
from .stats import CONFIDENCE_COLUMN, reliability_bins, run_scores  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Plot:
    name: str  # file stem: letters, digits, '-', '_'
    title: str
    figure: Figure
    data: dict[str, Any] = field(default_factory=dict)  # what was drawn, for tests and captions

    def png(self, dpi: int = 90) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        return buffer.getvalue()

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii")


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "-".join(parts)).strip("_")


class _Scores:
    """scores.csv.gz per run, read once, and only where it is the file its results name."""

    def __init__(self, entries: dict[tuple, tuple[str, str | None]]) -> None:
        self.entries = entries

    def get(self, key: tuple) -> pd.DataFrame | None:
        return run_scores(self.entries.get(key))


def figures(table: pd.DataFrame, baseline: str) -> list[Plot]:
    """Every figure for `report.tidy` output `table`, baseline's loss first."""
    labels: dict[str, str] = table.attrs.get("labels", {})
    scores = _Scores(table.attrs.get("scores", {}))
    out: list[Plot] = []
    for (suite, model), part in table.groupby(["suite", "model"], sort=False):
        losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss != baseline, loss))
        color = {loss: COLORS[i % len(COLORS)] for i, loss in enumerate(losses)}
        runs = {loss: sorted(set(part[part["loss"] == loss]["seed"])) for loss in losses}
        where = f"{suite} / {model}"
        plot = _per_seed(part, suite, model, losses, labels, color)
        if plot:
            out.append(plot)
        plot = _reliability(scores, suite, model, runs, labels)
        if plot:
            out.append(plot)
        detectors = [d for d in dict.fromkeys(part["detector"]) if d]
        for det in detectors:
            for maker in (_histograms, _roc):
                plot = maker(scores, suite, model, runs, labels, color, det)
                if plot:
                    out.append(plot)
        for plot in out:
            plot.data.setdefault("where", where)
    return out


def _label(labels: dict[str, str], loss: str) -> str:
    return labels.get(loss, loss)


def _reliability(scores: _Scores, suite: str, model: str, runs: dict[str, list[int]],
                 labels: dict[str, str]) -> Plot | None:
    pooled = {}
    for loss, seeds in runs.items():
        frames = [scores.get((suite, model, loss, seed)) for seed in seeds]
        frames = [f[f["group"] == "id"] for f in frames if f is not None and CONFIDENCE_COLUMN in f.columns]
        if frames:
            ids = pd.concat(frames)
            conf = ids[CONFIDENCE_COLUMN].to_numpy(float)
            correct = (ids["pred"].to_numpy() == ids["label"].to_numpy()).astype(float)
            pooled[loss] = (reliability_bins(conf, correct), len(frames), conf, correct)
    if not pooled:
        return None
    fig = Figure(figsize=(3.2 * len(pooled), 3.4), layout="constrained")
    axes = fig.subplots(1, len(pooled), squeeze=False)[0]
    data = {}
    for ax, (loss, ((edges, acc, mean_conf, count), n_runs, conf, correct)) in zip(axes, pooled.items(),
                                                                                   strict=True):
        width = edges[1] - edges[0]
        ece = float(np.nansum(np.abs(acc - mean_conf) * count) / count.sum())
        ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color="#1f77b4", edgecolor="white",
               label="accuracy")
        ax.plot(edges[:-1] + width / 2, mean_conf, "o", ms=4, color="#d62728", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (msp)", ylabel="accuracy",
               title=f"{_label(labels, loss)}: ECE {ece:.4f}\n({n_runs} seed{'s' if n_runs > 1 else ''} pooled)")
        ax.legend(loc="upper left", fontsize=7)
        data[loss] = {"edges": edges, "acc": acc, "conf": mean_conf, "count": count, "ece": ece, "runs": n_runs}
    return Plot(_slug(suite, model, "reliability"), f"{suite} / {model}: reliability diagrams (ID test set, "
                "15 equal-width bins, seeds pooled)", fig, data)


def _published(suite: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """(detector, dataset, metric) -> {loss: value} from published.yaml where a plot can show it."""
    import yaml

    from .tables import PUBLISHED

    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for entry in yaml.safe_load(PUBLISHED.read_text()):
        if entry["suite"] != suite.split("-")[0]:
            continue
        for row in entry["rows"]:
            metric = row["metric"]
            for loss, value in row.items():
                if loss == "metric":
                    continue
                try:
                    if metric == "acc (%)":
                        out.setdefault(("", "", "acc"), {})[loss] = float(value)
                    elif metric == "ECE":
                        out.setdefault(("", "", "ece"), {})[loss] = float(value)
                    elif metric.endswith(" AUROC near / far"):
                        det = metric.split(" ")[0]
                        near, far = (float(v) for v in str(value).split("/"))
                        out.setdefault((det, "near mean", "auroc"), {})[loss] = near
                        out.setdefault((det, "far mean", "auroc"), {})[loss] = far
                except ValueError:
                    continue
    return out


def _per_seed(part: pd.DataFrame, suite: str, model: str, losses: list[str], labels: dict[str, str],
              color: dict[str, str]) -> Plot | None:
    from .tables import ID_METRICS, OOD_HEADLINE

    panels: list[tuple[str, str, str, str]] = []  # (title, detector filter, dataset, metric)
    for metric in ("acc", "ece"):
        if ((part["group"] == "id") & (part["metric"] == metric)).any():
            panels.append((ID_METRICS[metric][0] + (" ↑" if ID_METRICS[metric][1] else " ↓"), "", "", metric))
    for group in ("near", "far"):
        for metric, (label, higher) in OOD_HEADLINE.items():
            if ((part["dataset"] == f"{group} mean") & (part["metric"] == metric)).any():
                panels.append((f"{group}: {label.split(',')[0]} {'↑' if higher else '↓'}", "*", f"{group} mean",
                               metric))
    if not panels:
        return None
    published = _published(suite)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    data: dict[str, Any] = {}
    for ax, (title, det_filter, dataset, metric) in zip(axes, panels, strict=False):
        sel = part[part["metric"] == metric]
        sel = sel[sel["group"] == "id"] if not det_filter else sel[sel["dataset"] == dataset]
        dets = [""] if not det_filter else [d for d in dict.fromkeys(sel["detector"]) if d]
        step = 0.8 / max(len(losses), 1)
        for i, loss in enumerate(losses):
            for x, det in enumerate(dets):
                values = sel[(sel["loss"] == loss) & (sel["detector"] == det)]["value"].to_numpy(float)
                if not values.size:
                    continue
                pos = x - 0.4 + step * (i + 0.5)
                ax.scatter(np.full(values.size, pos), values, s=14, color=color[loss], alpha=0.7,
                           label=_label(labels, loss) if x == 0 else None)
                ax.hlines(values.mean(), pos - step * 0.4, pos + step * 0.4, color=color[loss], lw=2)
                data[f"{metric}|{dataset}|{det}|{loss}"] = values.tolist()
                ref = published.get((det, dataset, metric), {}).get(loss.split("+")[0])
                if ref is not None:
                    ax.scatter([pos], [ref], marker="*", s=90, facecolor="none", edgecolor="black",
                               label="published" if "published" not in data else None)
                    data["published"] = data.get("published", 0) + 1
        ax.set_xticks(range(len(dets)), [d or "ID test set" for d in dets], rotation=30 if len(dets) > 3 else 0,
                      fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return Plot(_slug(suite, model, "per-seed"), f"{suite} / {model}: per-seed values (dots) and their means "
                "(bars); stars: published reference numbers", fig, data)


def _ood_sets(frame: pd.DataFrame) -> list[str]:
    return [str(d) for d in dict.fromkeys(frame.loc[frame["group"] != "id", "dataset"])]


def _histograms(scores: _Scores, suite: str, model: str, runs: dict[str, list[int]], labels: dict[str, str],
                color: dict[str, str], det: str) -> Plot | None:
    pooled: dict[str, pd.DataFrame] = {}
    for loss, seeds in runs.items():
        frames = [scores.get((suite, model, loss, s)) for s in seeds]
        frames = [f for f in frames if f is not None and det in f.columns]
        if frames:
            pooled[loss] = pd.concat(frames)
    if not pooled:
        return None
    sets = list(dict.fromkeys(s for f in pooled.values() for s in _ood_sets(f)))
    if not sets:
        return None
    fig = Figure(figsize=(3.3 * len(pooled), 2.4 * len(sets)), layout="constrained")
    axes = fig.subplots(len(sets), len(pooled), squeeze=False)
    for c, (loss, frame) in enumerate(pooled.items()):
        sid = frame.loc[frame["group"] == "id", det].to_numpy(float)
        for r, name in enumerate(sets):
            ax = axes[r][c]
            sood = frame.loc[frame["dataset"] == name, det].to_numpy(float)
            both = np.concatenate([sid, sood])
            both = both[np.isfinite(both)]
            if not both.size:
                ax.set_visible(False)
                continue
            bins = np.linspace(both.min(), both.max() if both.max() > both.min() else both.min() + 1, 41)
            ax.hist(sid[np.isfinite(sid)], bins=bins, density=True, alpha=0.55, color="#1f77b4", label="ID")
            ax.hist(sood[np.isfinite(sood)], bins=bins, density=True, alpha=0.55, color="#d62728", label=name)
            ax.set_title(f"{_label(labels, loss)}: ID vs {name}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, loc="upper right")
    return Plot(_slug(suite, model, "hist", det), f"{suite} / {model}: {det} scores, ID test set vs each OOD set "
                "(density, seeds pooled; higher = more in-distribution)", fig, {"sets": sets})


def roc_curve(sid: np.ndarray, sood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with ID positive at every distinct threshold, from (0, 0) to (1, 1)."""
    thresholds = np.unique(np.concatenate([sid, sood]))[::-1]
    sid_sorted, sood_sorted = np.sort(sid), np.sort(sood)
    tpr = 1.0 - np.searchsorted(sid_sorted, thresholds, side="left") / sid.size
    fpr = 1.0 - np.searchsorted(sood_sorted, thresholds, side="left") / sood.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def _roc(scores: _Scores, suite: str, model: str, runs: dict[str, list[int]], labels: dict[str, str],
         color: dict[str, str], det: str) -> Plot | None:
    frames = {(loss, s): scores.get((suite, model, loss, s)) for loss, seeds in runs.items() for s in seeds}
    frames = {k: f for k, f in frames.items() if f is not None and det in f.columns}
    if not frames:
        return None
    sets = list(dict.fromkeys(s for f in frames.values() for s in _ood_sets(f)))
    if not sets:
        return None
    cols = min(3, len(sets))
    rows = -(-len(sets) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, sets, strict=False):
        seen = set()
        for (loss, seed), frame in frames.items():
            sid = frame.loc[frame["group"] == "id", det].to_numpy(float)
            sood = frame.loc[frame["dataset"] == name, det].to_numpy(float)
            if not sood.size:
                continue
            fpr, tpr = roc_curve(sid, sood)
            ax.plot(fpr, tpr, color=color[loss], lw=1.2, alpha=0.8,
                    label=_label(labels, loss) if loss not in seen else None)
            seen.add(loss)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.axhline(0.95, color="grey", lw=0.6, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=f"FPR ({name} accepted)", ylabel="TPR (ID kept)")
        ax.set_title(f"{det}: ID vs {name}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[len(sets):]:
        ax.set_visible(False)
    return Plot(_slug(suite, model, "roc", det), f"{suite} / {model}: ROC curves of {det}, ID positive, one line "
                "per seed (dashed: TPR 95%, where FPR@95 is read)", fig, {"sets": sets})


def report_plots(results: list[dict[str, Any]], baseline: str, include_incomplete: bool = False) -> list[Plot]:
    """The figures of the report over `results` (the same runs `report.render` keeps)."""
    from .tables import select, tidy

    kept, _ = select(results, include_incomplete)
    return figures(tidy(kept), baseline)


def write_plots(plots: list[Plot], folder: str | Path) -> list[Path]:
    """Each figure as PNG and PDF in `folder` (created); returns the files written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HaloBenchError(f"--plots {folder}: cannot create the folder ({exc}).") from None
    if not folder.is_dir():
        raise HaloBenchError(f"--plots {folder}: not a folder.")
    written = []
    for plot in plots:
        for ext in ("png", "pdf"):
            path = folder / f"{plot.name}.{ext}"
            buffer = io.BytesIO()  # drawn in memory, then written atomically: a kill never leaves half a file
            plot.figure.savefig(buffer, format=ext, dpi=200, bbox_inches="tight",
                                metadata={"Creator": None, "Producer": None, "CreationDate": None}
                                if ext == "pdf" else {"Software": None})
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
    return written
