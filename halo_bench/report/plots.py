"""The report's figures, drawn with matplotlib (Agg, no pyplot state) from the same runs and Δ
cells as its tables, each rendered once as SVG (for the HTML page and `--plots`).

Per suite and model:
- a forest plot per loss against the baseline: every detector's paired Δ AUROC and Δ FPR@95
  on the near and far means with its 95% interval (clipped intervals end in an arrow),
  surviving cells filled, cells that exclude 0 only before the adjustment hollow;
- reliability diagrams per loss: accuracy and mean confidence per bin (bins pooled over
  seeds, 15 equal-width bins (lo, hi] as metrics.ece) with the count of samples in every bin
  beneath, and the per-seed ECE as mean ± std, the number the table shows;
- per-seed values (dots) and their means for accuracy, ECE and each detector's near/far AUROC
  and FPR@95, with the suite's published reference numbers as stars where there are any;
- score distributions: per detector and loss, the ID test set against the near and far OOD
  sets (pooled over sets and seeds), on one range per detector shared by every loss and
  clipped to the pooled 0.5-99.5% quantiles, counts on a log scale;
- ROC curves (ID positive) per detector against the near and far sets, one line per loss.

Import this module only when figures are asked for: it imports matplotlib.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from ..core.console import make_progress  # noqa: E402
from ..core.cpus import usable_cpus  # noqa: E402
from ..core.errors import HaloBenchError  # noqa: E402
from ..core.io import atomic_write_bytes  # noqa: E402
from .assemble import Report  # noqa: E402
from .figure import COLORS, Plot, slug  # noqa: E402
from .shift import shift_figure_jobs  # noqa: E402
from .stats import CONFIDENCE_COLUMN, reliability_bins, run_scores  # noqa: E402
from .tidy import ID_METRICS, OOD_HEADLINE, TUNED  # noqa: E402

GROUP_COLORS = {"id": "#1f77b4", "near": "#ff7f0e", "far": "#d62728"}
matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9})


Job = tuple[Callable[..., Any], tuple[Any, ...], str]  # (maker, its arguments, where)
_JOBS: list[Job] = []  # what forked workers draw, by index (fork shares it: nothing is pickled)


def figures(report: Report, render: bool = True, pdf: bool = False) -> list[Plot]:
    """Every figure of `report`, per suite and model. With `render`, each is rendered to SVG
    (and with `pdf` to PDF too) under a progress bar: in two worker processes where the CPUs
    allow and torch is not loaded (forking a process with torch's threads is not safe), else here."""
    jobs = _jobs(report)
    workers = min(2, usable_cpus(), len(jobs))
    if render and workers > 1 and "torch" not in sys.modules and hasattr(os, "fork"):
        return _render_in_workers(jobs, workers, pdf)
    plots = [plot for plot in (_make(job) for job in jobs) if plot is not None]
    if render:
        with make_progress() as progress:
            task = progress.add_task("report figures", total=len(plots), status="drawn")
            for plot in plots:
                plot.svg()
                if pdf:
                    plot.pdf()
                progress.advance(task)
    return plots


def _make(job: Job) -> Plot | None:
    maker, args, where = job
    plot = maker(*args)
    if plot is not None:
        plot.data["where"] = where
    return plot


def _draw(index: int, pdf: bool) -> Plot | None:
    """Worker: make and render job `index` of `_JOBS`; the figure stays here."""
    plot = _make(_JOBS[index])
    if plot is not None:
        plot.svg()
        if pdf:
            plot.pdf()
        plot.figure = None
    return plot


def _draw_indexed(index: int, pdf: bool) -> tuple[int, Plot | None]:
    return index, _draw(index, pdf)


def _weight(job: Job) -> int:
    """Roughly how long a figure takes: the panel grids of every detector dominate."""
    return {"_distributions": 3, "_rocs": 2, "_per_seed": 2}.get(job[0].__name__, 1)


def _render_in_workers(jobs: list[Job], workers: int, pdf: bool) -> list[Plot]:
    import multiprocessing

    _JOBS[:] = jobs
    try:
        with make_progress() as progress, multiprocessing.get_context("fork").Pool(workers) as pool:
            task = progress.add_task("report figures", total=len(jobs), status="drawn")
            # The largest figures first, so that neither worker is left with a long one at the end.
            order = sorted(range(len(jobs)), key=lambda i: -_weight(jobs[i]))
            drawn: dict[int, Plot | None] = {}
            for index, plot in pool.imap_unordered(functools.partial(_draw_indexed, pdf=pdf), order):
                drawn[index] = plot
                progress.advance(task)
            plots = [drawn[i] for i in range(len(jobs))]
    finally:
        _JOBS.clear()
    return [plot for plot in plots if plot is not None]


def _jobs(report: Report) -> list[Job]:
    """The figures to draw, as (maker, arguments) in reading order."""
    table, labels = report.table, report.labels
    jobs: list[Job] = []
    for (suite, model), part in table.groupby(["suite", "model"], sort=False):
        where = f"{suite} / {model}"
        losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss != report.baseline, loss))
        color = {loss: COLORS[i % len(COLORS)] for i, loss in enumerate(losses)}
        runs = {loss: sorted(set(part[part["loss"] == loss]["seed"])) for loss in losses}
        frames = {(loss, s): run_scores(table.attrs.get("scores", {}).get((suite, model, loss, s)))
                  for loss, seeds in runs.items() for s in seeds}
        detectors = [d for d in dict.fromkeys(part["detector"]) if d and not d.endswith(TUNED)]
        jobs += [(_forest, (report, suite, model, loss, detectors), where) for loss in losses
                 if loss != report.baseline]
        jobs += [(_reliability, (part, frames, suite, model, runs, labels), where),
                 (_per_seed, (part, suite, model, losses, labels, color), where),
                 (_distributions, (frames, suite, model, runs, labels, detectors), where),
                 (_rocs, (frames, suite, model, runs, labels, color, detectors), where)]
    return jobs + shift_figure_jobs(report.results, report.baseline, include_incomplete=True)


def _label(labels: dict[str, str], loss: str) -> str:
    return labels.get(loss, loss)


def _forest(report: Report, suite: str, model: str, loss: str, detectors: list[str]) -> Plot | None:
    """Paired Δ (loss - baseline) with 95% intervals, per detector, near and far, AUROC and FPR@95."""
    d = report.deltas
    d = d[(d["suite"] == suite) & (d["model"] == model) & (d["loss"] == loss)
          & d["dataset"].isin(["near mean", "far mean"])]
    rows = [(det, group) for det in detectors for group in ("near", "far")
            if ((d["detector"] == det) & (d["group"] == group)).any()]
    if not rows:
        return None
    survivors = {(c.keys["detector"], c.keys["group"], c.metric) for c in report.findings.findings
                 if c.survives and c.loss == loss and c.keys["suite"] == suite and c.keys["model"] == model}
    fig = Figure(figsize=(8.0, 0.9 + 0.24 * len(rows)))
    axes = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(left=0.2, right=0.98, top=1 - 0.55 / fig.get_figheight(), bottom=0.5 / fig.get_figheight(),
                        wspace=0.08)
    y = np.arange(len(rows))[::-1]
    data: dict[str, Any] = {"rows": [f"{det} {group}" for det, group in rows], "loss": loss, "kind": "forest plot"}
    for ax, (metric, (label, higher)) in zip(axes, OOD_HEADLINE.items(), strict=True):
        cells = {(r.detector, r.group): r for r in d[d["metric"] == metric].itertuples(index=False)}
        values = []
        for yy, key in zip(y, rows, strict=True):
            row = cells.get(key)
            if row is None or not np.isfinite(row.delta):
                continue
            lo, hi = row.delta_lo, row.delta_hi
            excludes = bool(row.excludes_zero) and np.isfinite(lo)
            colour = "#1b5e20" if (key[0], key[1], metric) in survivors else "#333333" if excludes else "#9e9e9e"
            if np.isfinite(lo) and np.isfinite(hi):
                ax.hlines(yy, lo, hi, color=colour, lw=1.6)
                if row.clipped:  # the interval ran past the metric's range: drawn to its edge, with an arrow
                    for end in (lo, hi):
                        if abs(end) >= 100 - 1e-9:
                            ax.annotate("", (end, yy), (end - np.sign(end) * 4, yy),
                                        arrowprops={"arrowstyle": "->", "color": colour})
            filled = (key[0], key[1], metric) in survivors
            ax.plot(row.delta, yy, "o", ms=5, color=colour, mfc=colour if filled else "white")
            values.append((key, float(row.delta), float(lo), float(hi)))
        ax.axvline(0, color="black", lw=0.8)
        better = "→ better" if higher else "← better"
        ax.set_xlabel(f"Δ {label.split(' (')[0]} ({_label(report.labels, loss)} − "
                      f"{_label(report.labels, report.baseline)}), points   {better}")
        ax.grid(axis="x", color="#e0e0e0", lw=0.6)
        data[metric] = values
    axes[0].set_yticks(y, [f"{det} ({group})" for det, group in rows])
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    fig.suptitle(f"{suite} / {model}: {_label(report.labels, loss)} vs {_label(report.labels, report.baseline)}",
                 fontsize=10)
    caption = (f"{suite} / {model}: paired differences {_label(report.labels, loss)} − "
               f"{_label(report.labels, report.baseline)} of every detector's near- and far-OOD mean AUROC and "
               "FPR@95, with 95% intervals (t over seeds, or bootstrap over samples for one seed). Filled green: "
               "survives the multiple-comparisons control; dark hollow: excludes 0 before it only; grey: "
               "includes 0. Arrows: intervals clipped at ±100 points.")
    return Plot(slug(suite, model, "forest", loss), caption, fig, data)


def _reliability(part: pd.DataFrame, frames: dict[tuple[str, int], pd.DataFrame | None], suite: str, model: str,
                 runs: dict[str, list[int]], labels: dict[str, str]) -> Plot | None:
    pooled = {}
    for loss, seeds in runs.items():
        ids = [f[f["group"] == "id"] for s in seeds if (f := frames.get((loss, s))) is not None
               and CONFIDENCE_COLUMN in f.columns]
        if ids:
            rows = pd.concat(ids)
            correct = (rows["pred"].to_numpy() == rows["label"].to_numpy()).astype(float)
            pooled[loss] = (reliability_bins(rows[CONFIDENCE_COLUMN].to_numpy(float), correct), len(ids))
    if not pooled:
        return None
    fig = Figure(figsize=(3.3 * len(pooled), 4.4))
    grid = fig.add_gridspec(2, len(pooled), height_ratios=(3, 1.2), hspace=0.12, left=0.1, right=0.98, top=0.86,
                            bottom=0.12, wspace=0.3)
    data = {}
    for c, (loss, ((edges, acc, mean_conf, count), n_runs)) in enumerate(pooled.items()):
        ax, below = fig.add_subplot(grid[0, c]), fig.add_subplot(grid[1, c])
        width = edges[1] - edges[0]
        ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color="#1f77b4", edgecolor="white",
               label="accuracy")
        ax.plot(edges[:-1] + width / 2, mean_conf, "o", ms=3.5, color="#d62728", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ece = part[(part["group"] == "id") & (part["metric"] == "ece") & (part["loss"] == loss)]["value"].to_numpy(float)
        spread = f" ± {ece.std(ddof=1):.4f}" if ece.size > 1 else ""
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", xticklabels=[])
        ax.set_title(f"{_label(labels, loss)}: ECE {ece.mean():.4f}{spread}\n(mean over {ece.size} seed"
                     f"{'s' if ece.size != 1 else ''}; bins pooled over {n_runs})")
        ax.legend(loc="upper left", fontsize=7, frameon=False)
        below.bar(edges[:-1], count, width=width, align="edge", color="#607d8b", edgecolor="white")
        below.set(xlim=(0, 1), yscale="log", xlabel="confidence (max softmax probability)", ylabel="samples")
        below.set_ylim(0.8, max(2.0, count.max() * 3))
        for x, n in zip(edges[:-1], count, strict=True):
            if n:
                below.text(x + width / 2, n * 1.15, f"{int(n)}", ha="center", va="bottom", fontsize=5.5)
        data[loss] = {"edges": edges, "acc": acc, "conf": mean_conf, "count": count, "ece_mean": float(ece.mean()),
                      "runs": n_runs}
    caption = (f"{suite} / {model}: reliability diagrams on the ID test set (15 equal-width bins; bars pooled "
               "over the seeds); the numbers beneath are the samples in each bin (log scale), and the title's "
               "ECE is the per-seed mean ± std the tables show.")
    return Plot(slug(suite, model, "reliability"), caption, fig, {**data, "kind": "reliability diagrams"})


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
    """Per-seed values as dots and their mean as a bar, one row per detector (horizontal: long
    detector names never collide)."""
    panels: list[tuple[str, str, str]] = []  # (title, dataset, metric)
    for metric in ("acc", "ece"):
        if ((part["group"] == "id") & (part["metric"] == metric)).any():
            panels.append((ID_METRICS[metric][0] + (" ↑" if ID_METRICS[metric][1] else " ↓"), "", metric))
    for group in ("near", "far"):
        for metric, (label, higher) in OOD_HEADLINE.items():
            if ((part["dataset"] == f"{group} mean") & (part["metric"] == metric)).any():
                panels.append((f"{group}: {label.split(',')[0]} {'↑' if higher else '↓'}", f"{group} mean", metric))
    if not panels:
        return None
    published = _published(suite)
    detectors = [d for d in dict.fromkeys(part["detector"]) if d and not d.endswith(TUNED)]
    # The ID panels (one row each) above, the detector panels (a row per detector) below.
    id_panels = [panel for panel in panels if not panel[1]]
    ood_panels = [panel for panel in panels if panel[1]]
    cols = max(len(ood_panels), 2)
    id_height, ood_height = (0.9 if id_panels else 0.0), (0.3 + 0.22 * len(detectors) if ood_panels else 0.0)
    fig = Figure(figsize=(9.0, 1.1 + id_height + ood_height))
    grid = fig.add_gridspec(2, cols, height_ratios=(max(id_height, 1e-3), max(ood_height, 1e-3)), left=0.13,
                            right=0.99, top=1 - 0.55 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                            hspace=0.25 if id_panels and ood_panels else 0.0, wspace=0.12)
    span = cols // max(len(id_panels), 1)
    axes = [fig.add_subplot(grid[0, i * span:(i + 1) * span]) for i in range(len(id_panels))]
    axes += [fig.add_subplot(grid[1, i]) for i in range(len(ood_panels))]
    panels = id_panels + ood_panels
    data: dict[str, Any] = {}
    step = 0.8 / max(len(losses), 1)
    keyed = part.assign(where=np.where(part["group"] == "id", "", part["dataset"]))
    values_of = {key: group["value"].to_numpy(float)
                 for key, group in keyed.groupby(["metric", "where", "detector", "loss"], sort=False)}
    for ax, (title, dataset, metric) in zip(axes, panels, strict=True):
        dets = [""] if not dataset else detectors
        for i, loss in enumerate(losses):
            xs, ys, means, rows, refs = [], [], [], [], []  # one scatter per loss and panel: drawing is the cost
            for y, det in enumerate(dets):
                values = values_of.get((metric, dataset, det, loss), np.empty(0))
                if not values.size:
                    continue
                pos = len(dets) - 1 - y + 0.4 - step * (i + 0.5)
                xs.append(values)
                ys.append(np.full(values.size, pos))
                means.append(values.mean())
                rows.append(pos)
                data[f"{metric}|{dataset}|{det}|{loss}"] = values.tolist()
                ref = published.get((det, dataset, metric), {}).get(loss.split("+")[0])
                if ref is not None:
                    refs.append((ref, pos))
            if not xs:
                continue
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=10, color=color[loss], alpha=0.7,
                       label=_label(labels, loss))
            ax.vlines(means, np.array(rows) - step * 0.4, np.array(rows) + step * 0.4, color=color[loss], lw=2)
            if refs:
                ax.scatter(*zip(*refs, strict=True), marker="*", s=60, facecolor="none", edgecolor="black",
                           label="published")
                data["published"] = data.get("published", 0) + len(refs)
        first_ood = dataset and (title, dataset, metric) == ood_panels[0]
        ax.set_yticks(range(len(dets))[::-1], [d or "" for d in dets] if first_ood or not dataset else [])
        ax.tick_params(axis="y", labelsize=7, length=0 if not dataset else 3.5)
        ax.locator_params(axis="x", nbins=4)
        ax.set_title(title)
        ax.grid(axis="x", color="#e0e0e0", lw=0.6)
    handles, names = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        more = ax.get_legend_handles_labels()
        handles += [h for h, n in zip(*more, strict=True) if n not in names]
        names += [n for n in more[1] if n not in names]
    fig.legend(handles, names, loc="upper right", ncols=len(names), fontsize=7, frameon=False)
    caption = f"{suite} / {model}: per-seed values (dots) and their means (bars)" + (
        "; stars: the published reference numbers" if data.get("published") else "") + "."
    return Plot(slug(suite, model, "per-seed"), caption, fig, {**data, "kind": "per-seed values"})


def _group_scores(frames: dict[tuple[str, int], pd.DataFrame | None], loss: str, seeds: list[int], det: str
                  ) -> dict[str, np.ndarray]:
    """ID, near and far scores of `det` for `loss`, pooled over seeds (and over the sets of a group)."""
    out: dict[str, list[np.ndarray]] = {"id": [], "near": [], "far": []}
    for s in seeds:
        frame = frames.get((loss, s))
        if frame is None or det not in frame.columns:
            continue
        groups = frame["group"].to_numpy()
        column = frame[det].to_numpy(float)
        for group in out:
            values = column[groups == group]
            out[group].append(values[np.isfinite(values)])
    return {g: np.concatenate(v) for g, v in out.items() if v and sum(map(len, v))}


LOSS_STYLES = ("-", "--", ":", "-.")


def _grid(n: int, cols: int, width: float, row_height: float) -> tuple[Figure, list[Any]]:
    """A figure of `n` small panels in rows of `cols`, fixed margins (no layout engine: it is
    what takes the time), the rest hidden."""
    rows = -(-n // cols)
    fig = Figure(figsize=(width, 0.75 + row_height * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    fig.subplots_adjust(left=0.07, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        hspace=0.6, wspace=0.28)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _central(values: list[np.ndarray]) -> tuple[float, float]:
    """The 0.5-99.5% quantiles of the pooled `values` (a unit range where they are all equal)."""
    pooled = np.concatenate(values) if values else np.empty(0)
    lo, hi = (float(q) for q in np.quantile(pooled, [0.005, 0.995])) if pooled.size else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1.0


# A loss whose central range spans less than this share of the detector's shared range would be
# drawn in a bin or two there: such a detector gets one panel per loss, each on its own range.
COMPARABLE_SPAN = 0.25


def distribution_panels(scores: dict[tuple[str, str], dict[str, np.ndarray]], detectors: list[str],
                        losses: list[str]) -> list[tuple[str, list[str], tuple[float, float], bool]]:
    """(detector, losses drawn, x range, own range) per panel: one panel per detector on the range
    shared by every loss, or, where one loss's scores would pile into a few bins of it (its central
    range under `COMPARABLE_SPAN` of the shared one), one panel per loss on its own range."""
    panels = []
    for det in detectors:
        own = {loss: _central(list(scores[(det, loss)].values())) for loss in losses if scores[(det, loss)]}
        shared = _central([v for loss in own for v in scores[(det, loss)].values()])
        span = shared[1] - shared[0]
        if all(hi - lo >= COMPARABLE_SPAN * span for lo, hi in own.values()):
            panels.append((det, list(own), shared, False))
        else:
            panels += [(det, [loss], own[loss], True) for loss in own]
    return panels


def _distributions(frames: dict[tuple[str, int], pd.DataFrame | None], suite: str, model: str,
                   runs: dict[str, list[int]], labels: dict[str, str], detectors: list[str]) -> Plot | None:
    scores = {(det, loss): _group_scores(frames, loss, seeds, det) for det in detectors for loss, seeds in runs.items()}
    losses = list(runs)
    panels = distribution_panels(scores, detectors, losses)
    if not panels:
        return None
    style = dict(zip(losses, LOSS_STYLES * 4, strict=False))
    fig, axes = _grid(len(panels), 3, 9.0, 1.9)
    data: dict[str, Any] = {}
    for ax, (det, drawn, (lo, hi), own) in zip(axes, panels, strict=True):
        bins = np.linspace(lo, hi, 31)
        for loss in drawn:
            data[f"{det}|{loss}"] = {"range": (lo, hi), "own_range": own}
            for group, values in scores[(det, loss)].items():
                counts, _ = np.histogram(np.clip(values, lo, hi), bins=bins)
                ax.stairs(counts, bins, color=GROUP_COLORS[group], lw=1.0, ls=style[loss])
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: slow to draw, nothing to read
        ax.set_xlim(lo, hi)
        ax.locator_params(axis="x", nbins=4)
        ax.tick_params(labelsize=6.5)
        ax.set_title(f"{det}: {_label(labels, drawn[0])}, own range" if own else det, fontsize=8, pad=2)
        ax.set_xlabel("score", fontsize=7, labelpad=1)
        ax.set_ylabel("samples", fontsize=7, labelpad=1)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=GROUP_COLORS[g], label=name)
               for g, name in (("id", "ID test"), ("near", "near OOD"), ("far", "far OOD"))]
    handles += [Line2D([], [], color="#555555", ls=style[loss], label=_label(labels, loss)) for loss in losses]
    fig.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=7, frameon=False)
    caption = (f"{suite} / {model}: score distributions (higher = more in-distribution) per detector: the ID "
               "test set and the near and far OOD sets (each group's sets pooled), one line style per loss, "
               "pooled over seeds; x range: the pooled 0.5-99.5% quantiles (values beyond are counted in the end "
               "bins), one range per detector for every loss, except where one loss's central 99% would span under "
               f"{COMPARABLE_SPAN:.0%} of it: then one panel per loss on its own range ('own range'); sample counts "
               "on a log scale.")
    return Plot(slug(suite, model, "distributions"), caption, fig, {**data, "kind": "score distributions"})


def roc_curve(sid: np.ndarray, sood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with ID positive at every distinct threshold, from (0, 0) to (1, 1)."""
    thresholds = np.unique(np.concatenate([sid, sood]))[::-1]
    sid_sorted, sood_sorted = np.sort(sid), np.sort(sood)
    tpr = 1.0 - np.searchsorted(sid_sorted, thresholds, side="left") / sid.size
    fpr = 1.0 - np.searchsorted(sood_sorted, thresholds, side="left") / sood.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def _thin(x: np.ndarray, y: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """At most `points` points of a curve, its ends kept (the drawing, not the metrics, is thinned)."""
    if x.size <= points:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, x.size - 1, points).astype(int), x.size - 1])
    return x[keep], y[keep]


def _rocs(frames: dict[tuple[str, int], pd.DataFrame | None], suite: str, model: str, runs: dict[str, list[int]],
          labels: dict[str, str], color: dict[str, str], detectors: list[str]) -> Plot | None:
    curves = {(det, loss): _group_scores(frames, loss, seeds, det) for det in detectors for loss, seeds in runs.items()}
    dets = [d for d in detectors if any("id" in curves[(d, loss)] for loss in runs)]
    if not dets:
        return None
    fig, axes = _grid(len(dets), 4, 9.0, 2.0)
    for ax, det in zip(axes, dets, strict=True):
        for loss in runs:
            got = curves[(det, loss)]
            for group, style in (("near", "-"), ("far", "--")):
                if "id" in got and group in got:
                    fpr, tpr = _thin(*roc_curve(got["id"], got[group]))
                    ax.plot(fpr, tpr, color=color[loss], lw=1.0, ls=style)
        ax.plot([0, 1], [0, 1], ":", color="#9e9e9e", lw=0.7)
        ax.axhline(0.95, color="#9e9e9e", lw=0.6)
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.locator_params(nbins=3)
        ax.tick_params(labelsize=6.5)
        ax.set_title(det, fontsize=8, pad=2)
        ax.set_xlabel("FPR (OOD accepted)", fontsize=7, labelpad=1)
        ax.set_ylabel("TPR (ID kept)", fontsize=7, labelpad=1)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color[loss], label=_label(labels, loss)) for loss in runs]
    handles += [Line2D([], [], color="#555555", ls=style, label=f"vs {group} OOD")
                for group, style in (("near", "-"), ("far", "--"))]
    fig.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=7, frameon=False)
    caption = (f"{suite} / {model}: ROC curves (ID positive) of each detector against the near and the far OOD "
               "sets (each group's sets pooled), one colour per loss, pooled over seeds; grey line: TPR 95%, "
               "where FPR@95 is read.")
    return Plot(slug(suite, model, "roc"), caption, fig, {"detectors": dets, "kind": "ROC curves"})


def write_plots(plots: list[Plot], folder: str | Path) -> list[Path]:
    """Each figure as SVG (the HTML report's, not drawn again) and PDF in `folder` (created);
    returns the files written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HaloBenchError(f"--plots {folder}: cannot create the folder ({exc}).") from None
    if not folder.is_dir():
        raise HaloBenchError(f"--plots {folder}: not a folder.")
    written = []
    for plot in plots:  # each drawn in memory, then written atomically: a kill never leaves half a file
        atomic_write_bytes(folder / f"{plot.name}.svg", plot.svg())
        atomic_write_bytes(folder / f"{plot.name}.pdf", plot.pdf())
        written += [folder / f"{plot.name}.svg", folder / f"{plot.name}.pdf"]
    return written
