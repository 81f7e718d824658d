"""The report's covariate-shift part, from the `shift` sections of `eval --shift` results
(evaluate/shift.py): tables as `(title, header, rows)` like `tables.tables()`, and figures as
`figure.Plot` (matplotlib is imported when a figure is drawn).

Per run (loss, seed), each metric is first averaged over the corruptions every run of the
group has, per severity (0 = the clean ID test set, and "1-5" = the mean over every
corruption and severity, CIFAR-10-C's headline); then, over seeds, the mean ± sample
standard deviation per loss, and Δ against the baseline loss: the mean of the per-seed
differences with a 95% t interval over them (as the other tables; `*` where it excludes 0).
A run evaluated under shift more than once counts one of those evaluations of its current
checkpoint: the one with the most shifted splits, the newest among equals (evaluations of other
selections are never mixed, so every number of a run comes from one set of detectors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .tables import mean_cell

ALL = "1-5"  # the row averaging every severity
# ID metric -> (label, higher is better, decimals); ts_*: after the temperature fitted on clean ID val
SHIFT_ID_METRICS = {
    "acc": ("acc (%)", True, 2), "ece": ("ECE", False, 4), "aece": ("adaptive ECE", False, 4),
    "nll": ("NLL", False, 4), "brier": ("Brier", False, 4), "aurc": ("AURC", False, 4),
    "ts_ece": ("ECE after TS", False, 4), "ts_aece": ("adaptive ECE after TS", False, 4),
    "ts_nll": ("NLL after TS", False, 4), "ts_brier": ("Brier after TS", False, 4),
    "ts_aurc": ("AURC after TS", False, 4),
}
FSOOD = {"auroc": ("full-spectrum AUROC (%)", True), "fpr95": ("full-spectrum FPR@95 (%), ID positive", False)}
COLUMNS = ["suite", "model", "shift", "loss", "seed", "corruption", "severity", "detector", "group", "metric", "value"]
NOTES = (
    "Under covariate shift (docs/protocol.md, 'Covariate shift'): per run, each metric is averaged over the "
    "corruptions every run of the table has, per severity (0: the clean ID test set; 1-5: over every corruption and "
    "severity); then mean ± sample standard deviation over seeds. Full-spectrum: clean + shifted ID test samples "
    "count as ID against each OOD set (OpenOOD v1.5's FSOOD), near/far means. Rejection: percent of shifted ID "
    "samples below the detector's clean 95%-TPR threshold. Δ: mean of per-seed differences to the baseline, 95% t "
    "interval over seeds (cut at the metric's range and marked clipped), * where it excludes 0 (not adjusted for "
    "multiple comparisons: these cells are outside the Findings' family). Generated sets are CIFAR-10-C-style, "
    "not the published files."
)


def shift_tidy(results: list[dict[str, Any]], include_incomplete: bool = False) -> pd.DataFrame:
    """One row per (run, corruption, severity, detector, group, metric) of the results' `shift`
    sections; severity 0 (corruption `clean`) holds the clean numbers they are set against."""
    rows: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    for key, doc in _runs(results, include_incomplete).items():
        loss = key[3]
        labels[loss] = str(doc.get("loss", {}).get("label") or loss)
        base = dict(zip(COLUMNS[:5], key, strict=True))
        rows += _clean_rows(base, doc)
        for corruption, by_severity in doc["shift"]["splits"].items():
            for severity, split in by_severity.items():
                rows += _split_rows({**base, "corruption": corruption, "severity": int(severity)}, split)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["labels"] = labels
    return table


def _runs(results: list[dict[str, Any]], include_incomplete: bool) -> dict[tuple, dict[str, Any]]:
    """(suite, model, shift set, loss, seed) -> the shift evaluation reported for it: of its newest
    checkpoint's, the one with the most splits (the newest among equals). Partial and (by
    default) unfinished runs are out."""
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for doc in results:
        if not doc.get("shift") or doc.get("partial"):
            continue
        if not doc.get("checkpoint", {}).get("complete") and not include_incomplete:
            continue
        loss = str(doc.get("loss", {}).get("tag") or doc["model"]["loss"])
        key = (doc["suite"], doc["model"]["name"], doc["shift"]["dataset"], loss, doc["seed"])
        runs.setdefault(key, []).append(doc)
    out = {}
    for key, docs in runs.items():
        docs = sorted(docs, key=lambda d: d["created"], reverse=True)
        sha = docs[0].get("checkpoint", {}).get("sha256")
        current = [d for d in docs if d.get("checkpoint", {}).get("sha256") == sha]
        out[key] = max(current, key=lambda d: sum(len(v) for v in d["shift"]["splits"].values()))  # first max: newest
    return out


def _split_rows(base: dict[str, Any], split: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{**base, "detector": "", "group": "id", "metric": m, "value": v}
            for m, v in split["id_metrics"].items()]
    rows += [{**base, "detector": d, "group": "rejection", "metric": "rejection", "value": v}
             for d, v in split["rejection"].items()]
    for det, result in split["fsood"].items():
        for group in ("near", "far"):
            rows += [{**base, "detector": det, "group": group, "metric": m, "value": v}
                     for m, v in result.get(group, {}).items()]
    return rows


def _clean_rows(base: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Severity 0: the clean ID metrics and rejection rates of the shift section, and the clean
    OOD metrics (full-spectrum with no shifted sample is the plain OOD evaluation)."""
    clean = {**base, "corruption": "clean", "severity": 0}
    split = {"id_metrics": doc["shift"]["clean"]["id_metrics"], "rejection": doc["shift"]["clean"]["rejection"],
             "fsood": {d: doc["ood"][d] for d in doc["shift"]["detectors"] if d in doc.get("ood", {})}}
    return _split_rows(clean, split)


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and severity (and `1-5`): the mean over the corruptions every run of its (suite,
    model, shift set) has, at the severities every run has; `attrs["corruptions"]` names them."""
    kept, common = [], {}
    for key, part in table.groupby(["suite", "model", "shift"], sort=False):
        shifted = part[part["severity"] > 0]
        runs = [g for _, g in shifted.groupby(["loss", "seed"])]
        corruptions = sorted(set.intersection(*(set(g["corruption"]) for g in runs))) if runs else []
        severities = set.intersection(*(set(g["severity"]) for g in runs)) if runs else set()
        common[key] = corruptions
        kept.append(part[(part["severity"] == 0) | (part["corruption"].isin(corruptions)
                                                    & part["severity"].isin(severities))])
    data = pd.concat(kept) if kept else table
    by = ["suite", "model", "shift", "loss", "seed", "detector", "group", "metric"]
    severities = data.groupby([*by, "severity"], sort=False)["value"].mean().reset_index()
    severities["severity"] = severities["severity"].astype(str)
    overall = data[data["severity"] > 0].groupby(by, sort=False)["value"].mean().reset_index().assign(severity=ALL)
    out = pd.concat([severities, overall], ignore_index=True)
    out.attrs = {**table.attrs, "corruptions": common}
    return out


def summarise(runs: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Per loss and key: mean, sample std and seed count over seeds, and (against `baseline`)
    the paired Δ with its 95% t interval over the seeds both losses have (deltas.paired_differences,
    as the other tables), cut to the metric's range."""
    from .deltas import clip_to_range, paired_differences

    keys = ["suite", "model", "shift", "detector", "group", "metric", "severity"]
    agg = runs.groupby([*keys, "loss"], sort=False)["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count").reset_index()
    if baseline is None:
        return agg.assign(delta=np.nan, delta_lo=np.nan, delta_hi=np.nan, pairs=0)
    deltas = clip_to_range(paired_differences(runs, baseline, keys)).drop(columns="p")
    return agg.merge(deltas, on=[*keys, "loss"], how="left")


def _delta(row: dict[str, Any] | None, decimals: int, expected: int = 0) -> str:
    """Δ with its interval; fewer pairs than the `expected` (the seeds the titles state) are said."""
    if row is None or np.isnan(row["delta"]):
        return "–"
    text = f"{row['delta']:+.{decimals}f}"
    if row["pairs"] > 1:
        lo, hi = row["delta_lo"], row["delta_hi"]
        text += f" [{lo:+.{decimals}f}, {hi:+.{decimals}f}]" + ("*" if lo > 0 or hi < 0 else "")
        text += " (clipped)" if row.get("clipped") is True else ""
    else:
        text += " (1 pair)"
    if 1 < row["pairs"] < expected:
        text += f" ({int(row['pairs'])} of {expected} pairs)"
    return text


def _severity_label(severity: str) -> str:
    return {"0": "0 (clean)", ALL: "1-5 (mean)"}.get(severity, severity)


class _Group:
    """One (suite, model, shift set) of `summarise` output: its losses, seeds and cells."""

    def __init__(self, stats: pd.DataFrame, runs: pd.DataFrame, key: tuple, baseline: str | None,
                 labels: dict[str, str]) -> None:
        self.key = key
        part = runs[(runs["suite"] == key[0]) & (runs["model"] == key[1]) & (runs["shift"] == key[2])]
        self.losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss != baseline, loss))
        self.baseline = baseline if baseline in self.losses and len(self.losses) > 1 else None
        self.seeds = {loss: sorted(set(part[part["loss"] == loss]["seed"])) for loss in self.losses}
        self.labels = labels
        index = stats.set_index(["suite", "model", "shift", "detector", "group", "metric", "severity", "loss"])
        self.cells: dict[tuple, dict[str, Any]] = index[~index.index.duplicated()].to_dict("index")
        self.severities = [s for s in ["0", "1", "2", "3", "4", "5", ALL] if s in set(part["severity"])]
        self.detectors = [d for d in dict.fromkeys(part["detector"]) if d]

    def label(self, loss: str) -> str:
        return self.labels.get(loss, loss)

    def header(self, prefix: str = "") -> list[str]:
        cols = [f"{prefix}{self.label(loss)}" for loss in self.losses]
        if self.baseline:
            cols += [f"{prefix}Δ {self.label(loss)}−{self.label(self.baseline)}"
                     for loss in self.losses if loss != self.baseline]
        return cols

    def row(self, detector: str, group: str, metric: str, severity: str, decimals: int) -> list[str]:
        def get(loss: str) -> dict[str, Any] | None:
            return self.cells.get((*self.key, detector, group, metric, severity, loss))

        cells = [mean_cell(get(loss), decimals, len(self.seeds[loss])) for loss in self.losses]
        if self.baseline:
            cells += [_delta(get(loss), decimals, max(len(self.seeds[loss]), len(self.seeds[self.baseline])))
                      for loss in self.losses if loss != self.baseline]
        return cells

    def title(self, corruptions: list[str]) -> str:
        seeds = "; ".join(f"{self.label(loss)} {len(s)} seed{'s' if len(s) > 1 else ''} {','.join(map(str, s))}"
                          for loss, s in self.seeds.items())
        return (f"{self.key[0]} / {self.key[1]} ({seeds}): under shift ({self.key[2]}, mean over "
                f"{len(corruptions)} corruptions)")


def shift_tables(results: list[dict[str, Any]], baseline: str = "cce", include_incomplete: bool = False
                 ) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every shift table: ID metrics by severity, full-spectrum AUROC
    and FPR@95 by severity per detector (near / far), rejection rates by severity, and accuracy
    and ECE per corruption (mean over severities). Empty without shift results."""
    return shift_section(results, baseline, include_incomplete)[0]


def shift_section(results: list[dict[str, Any]], baseline: str = "cce", include_incomplete: bool = False
                  ) -> tuple[list[tuple[str, list[str], list[list[str]]]], pd.DataFrame]:
    """The shift tables (`shift_tables`) and the cells behind them, for CSV and JSON: `summarise`
    output (per key, severity and loss the mean, std, seeds and the Δ with its interval; corruption
    `mean`) and `per_corruption_cells` (severity `1-5`, one corruption each)."""
    table = shift_tidy(results, include_incomplete)
    if table.empty:
        return [], pd.DataFrame()
    runs = per_run(table)
    stats = summarise(runs, baseline if baseline in set(runs["loss"]) else None)
    corrupted = per_corruption_cells(table, runs.attrs["corruptions"])
    cells = pd.concat([stats.assign(corruption="mean"), corrupted], ignore_index=True)
    return _tables(table, runs, stats, corrupted, baseline), cells


def _tables(table: pd.DataFrame, runs: pd.DataFrame, stats: pd.DataFrame, corrupted: pd.DataFrame, baseline: str
            ) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for key in dict.fromkeys(zip(runs["suite"], runs["model"], runs["shift"], strict=True)):
        group = _Group(stats, runs, key, baseline, table.attrs["labels"])
        corruptions = runs.attrs["corruptions"][key]
        prefix = group.title(corruptions)
        present = {cell[:7] for cell in group.cells}
        rows = [[f"{label}{' ↑' if higher else ' ↓'}", _severity_label(sev), *group.row("", "id", m, sev, dec)]
                for m, (label, higher, dec) in SHIFT_ID_METRICS.items()
                for sev in group.severities if (*key, "", "id", m, sev) in present]
        out.append((f"{prefix}: ID metrics by severity", ["metric", "severity", *group.header()], rows))
        for metric, (label, higher) in FSOOD.items():
            header = ["detector", "severity", *group.header("near "), *group.header("far ")]
            rows = [[det, _severity_label(sev), *group.row(det, "near", metric, sev, 2),
                     *group.row(det, "far", metric, sev, 2)] for det in group.detectors for sev in group.severities]
            out.append((f"{prefix}: {label} {'↑' if higher else '↓'}, near / far means", header, rows))
        rows = [[det, _severity_label(sev), *group.row(det, "rejection", "rejection", sev, 2)]
                for det in group.detectors for sev in group.severities]
        out.append((f"{prefix}: shifted ID rejected at the clean 95%-TPR threshold (%) ↓",
                    ["detector", "severity", *group.header()], rows))
        out.append(_per_corruption(corrupted, key, group, corruptions, prefix))
    return out


def per_corruption_cells(table: pd.DataFrame, corruptions: dict[tuple, list[str]]) -> pd.DataFrame:
    """Accuracy and ECE per corruption of each (suite, model, shift set), each run's value the mean
    over the corruption's severities, then mean, sample std and seed count over seeds per loss;
    the corruptions every run has (`per_run`'s attrs["corruptions"])."""
    keys = ["suite", "model", "shift"]
    part = table[(table["group"] == "id") & table["metric"].isin(["acc", "ece"]) & (table["severity"] > 0)]
    part = part[[corruption in corruptions.get(key, ()) for key, corruption in
                 zip(zip(*(part[k] for k in keys), strict=True), part["corruption"], strict=True)]]
    runs = part.groupby([*keys, "loss", "seed", "corruption", "metric"], sort=False)["value"].mean().reset_index()
    out = runs.groupby([*keys, "loss", "corruption", "metric"], sort=False)["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count").reset_index()
    return out.assign(detector="", group="id", severity=ALL)


def _per_corruption(cells: pd.DataFrame, key: tuple, group: _Group, corruptions: list[str], prefix: str
                    ) -> tuple[str, list[str], list[list[str]]]:
    """Accuracy and ECE per corruption (`per_corruption_cells`), mean ± std over seeds."""
    mine = {(r.loss, r.corruption, r.metric): r for r in cells.itertuples(index=False)
            if (r.suite, r.model, r.shift) == key}
    header = ["corruption", *(f"{m} {group.label(loss)}" for m in ("acc", "ECE") for loss in group.losses)]
    rows = []
    for corruption in corruptions:
        row = [corruption]
        for metric, decimals in (("acc", 2), ("ece", 4)):
            for loss in group.losses:
                cell = mine.get((loss, corruption, metric))
                row.append("–" if cell is None else f"{cell.mean:.{decimals}f}" + (
                    f" ± {cell.std:.{decimals}f}" if cell.n > 1 else ""))
        rows.append(row)
    return f"{prefix}: per corruption, mean over severities", header, rows


# --------------------------------------------------------------------------- figures


def shift_figures(results: list[dict[str, Any]], baseline: str = "cce", include_incomplete: bool = False) -> list[Any]:
    """`figure.Plot`s: accuracy and ECE by severity per loss (box plots over corruptions, Ovadia et
    al. 2019's figure), and rejection rate and full-spectrum AUROC by severity per detector."""
    jobs = shift_figure_jobs(results, baseline, include_incomplete)
    return [plot for maker, args, _ in jobs if (plot := maker(*args)) is not None]


def shift_figure_jobs(results: list[dict[str, Any]], baseline: str = "cce", include_incomplete: bool = False
                      ) -> list[tuple[Any, tuple[Any, ...], str]]:
    """The shift figures as (maker, arguments, suite / model) to draw, as `plots.figures` draws
    every figure of a report."""
    table = shift_tidy(results, include_incomplete)
    if table.empty:
        return []
    runs = per_run(table)
    jobs: list[tuple[Any, tuple[Any, ...], str]] = []
    for key, part in table.groupby(["suite", "model", "shift"], sort=False):
        where = f"{key[0]} / {key[1]}"
        losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss != baseline, loss))
        labels = {loss: table.attrs["labels"].get(loss, loss) for loss in losses}
        common = runs.attrs["corruptions"][key]
        jobs.append((_boxes, (part[(part["severity"] == 0) | part["corruption"].isin(common)], key, losses, labels),
                     where))
        mine = runs[(runs["suite"] == key[0]) & (runs["model"] == key[1]) & (runs["shift"] == key[2])
                    & (runs["severity"] != ALL)]
        for metric, title, ylabel in (("rejection", "shifted ID rejected at the clean 95%-TPR threshold",
                                       "rejected (%)"),
                                      ("auroc", "full-spectrum AUROC, far-OOD mean", "AUROC (%)")):
            jobs.append((_lines, (mine, key, losses, labels, metric, title, ylabel), where))
    return jobs


def _figure(width: float, height: float) -> Any:
    from .figure import new_figure

    return new_figure(width, height, layout="constrained")


def _boxes(part: pd.DataFrame, key: tuple, losses: list[str], labels: dict[str, str]) -> Any:
    """Accuracy and ECE at each severity: per loss a box over corruptions (each corruption's value
    the mean over seeds); severity 0 is the clean set, one value per loss."""
    from .figure import COLORS, Plot, slug

    fig = _figure(5.2 * 2, 3.8)
    axes = fig.subplots(1, 2)
    ids = part[part["group"] == "id"]
    data: dict[str, Any] = {}
    width = 0.8 / len(losses)
    for ax, (metric, name) in zip(axes, (("acc", "accuracy (%)"), ("ece", "ECE")), strict=True):
        values = ids[ids["metric"] == metric].groupby(["loss", "severity", "corruption"])["value"].mean()
        for i, loss in enumerate(losses):
            per_severity = [values.get(loss, pd.Series(dtype=float)).get(s, pd.Series(dtype=float)).to_numpy(float)
                            for s in range(6)]
            positions = [s - 0.4 + width * (i + 0.5) for s in range(6)]
            kept = [(p, v) for p, v in zip(positions, per_severity, strict=True) if v.size]
            color = COLORS[i % len(COLORS)]
            box = ax.boxplot([v for _, v in kept], positions=[p for p, _ in kept], widths=width * 0.85,
                             patch_artist=True, manage_ticks=False, flierprops={"markersize": 3})
            for patch in box["boxes"]:
                patch.set(facecolor=color, alpha=0.55)
            if metric == "acc":  # one legend for the figure, drawn from the first panel's entries
                ax.plot([], [], color=color, lw=6, alpha=0.55, label=labels[loss])
            data[f"{metric}|{loss}"] = {s: v.tolist() for s, v in enumerate(per_severity) if v.size}
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set(xlabel="corruption severity", ylabel=name, title=f"{name} under shift")
    fig.legend(loc="outside upper center", ncols=len(losses), fontsize=8, frameon=False)  # off the data
    return Plot(slug(*map(str, key), "shift-acc-ece"), f"{key[0]} / {key[1]}: accuracy and ECE by severity under "
                f"{key[2]} (box: spread over corruptions of the mean over seeds; clean: the unshifted test set)",
                fig, data)


def _lines(part: pd.DataFrame, key: tuple, losses: list[str], labels: dict[str, str], metric: str, title: str,
           ylabel: str) -> Any:
    """Per detector a panel: the metric by severity, one line per loss (`per_run` values: the mean
    over corruptions, then over seeds; bars: ± std over seeds)."""
    from .figure import COLORS, Plot, slug

    rows = part[(part["metric"] == metric) & part["group"].isin(["rejection", "far"])]
    rows = rows.assign(severity=rows["severity"].astype(int))
    detectors = [d for d in dict.fromkeys(rows["detector"]) if d]
    if not detectors:
        return None
    cols = min(3, len(detectors))
    nrows = -(-len(detectors) // cols)
    fig = _figure(3.6 * cols, 2.9 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    data: dict[str, Any] = {}
    per_seed = rows.groupby(["detector", "loss", "seed", "severity"])["value"].mean()
    for ax, det in zip(axes, detectors, strict=False):
        for i, loss in enumerate(losses):
            try:
                seeds = per_seed.loc[(det, loss)].unstack("seed")
            except KeyError:
                continue
            mean, std = seeds.mean(axis=1), seeds.std(axis=1, ddof=1).fillna(0.0)
            ax.errorbar(mean.index, mean.to_numpy(), yerr=std.to_numpy(), color=COLORS[i % len(COLORS)],
                        marker="o", ms=3, capsize=2)
            data[f"{det}|{loss}"] = dict(zip(map(int, mean.index), mean.to_numpy().tolist(), strict=True))
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set(xlabel="corruption severity", ylabel=ylabel, title=det)
    for ax in axes[len(detectors):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS[i % len(COLORS)], marker="o", ms=3, label=labels[loss])
               for i, loss in enumerate(losses)]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(losses), fontsize=8, frameon=False)
    return Plot(slug(*map(str, key), "shift", metric), f"{key[0]} / {key[1]}: {title} by severity under {key[2]} "
                "(mean over corruptions and seeds; bars: ± std over seeds)", fig, data)
