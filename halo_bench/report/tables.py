"""The comparison tables every human-readable format shows, from `tidy` output and the Δ cells.

Everything goes through `tidy` (one row per run, detector, set, metric); the
human-readable tables, the paired differences and their intervals are computed from
it, so the formats cannot disagree. Reads JSON only: no torch, no timm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..losses import LOSSES
from ..results import GROUPS
from .deltas import compute_deltas
from .findings import ADJUSTMENT_NAMES, Findings
from .tidy import DEFAULT_BASELINE, ID_METRICS, KEYS, OOD_HEADLINE, TUNED, aggregate

Cells = dict[tuple, dict[str, Any]]  # (*KEYS, loss) -> a row of aggregate() or deltas.compute_deltas()


def mean_cell(row: dict[str, Any] | None, decimals: int, expected: int = 0) -> str:
    """Mean ± std over seeds of an aggregated row (mean, std, n); a cell backed by fewer seeds
    than its column's title states (`expected`) says so."""
    if row is None:
        return "–"
    text = f"{row['mean']:.{decimals}f}"
    if row["n"] > 1 and not np.isnan(row["std"]):
        text += f" ± {row['std']:.{decimals}f}"
    return text + _fewer(int(row["n"]), expected, "seed")


def _fewer(n: int, expected: int, what: str) -> str:
    return f" ({n} of {expected} {what}s)" if 0 < n < expected else ""


def _delta(stats: Cells, deltas: Cells, key: tuple, decimals: int, loss: str,
           baseline: str, expected: int = 0, survivors: frozenset[tuple] = frozenset()) -> str:
    """Paired mean difference with its 95% interval: `*` where the interval excludes 0, `**`
    where it also survives the report's multiple-comparisons control (`survivors`); an interval
    cut at the metric's range says `(clipped)`. Without shared seeds, the difference of the
    means, marked unpaired. Fewer pairs than the seeds the columns' titles state are said in the cell."""
    if (*key, loss) in deltas:
        row = deltas[(*key, loss)]
        text = f"{row['delta']:+.{decimals}f}"
        lo, hi = row["delta_lo"], row["delta_hi"]
        if row["pairs"] > 1 or not (np.isnan(lo) or np.isnan(hi)):
            mark = "**" if (*key, loss) in survivors else "*" if lo > 0 or hi < 0 else ""
            text += f" [{lo:+.{decimals}f}, {hi:+.{decimals}f}]{mark}"
            text += " (clipped)" if row.get("clipped", False) else ""
            text += " (bootstrap)" if row["pairs"] == 1 else ""
        return text + _fewer(int(row["pairs"]), expected, "pair")
    try:
        value, base = stats[(*key, loss)]["mean"], stats[(*key, baseline)]["mean"]
    except KeyError:
        return "–"
    return f"{value - base:+.{decimals}f} (unpaired)"


def _seed_union(column: pd.Series) -> str:
    seeds = {int(seed) for cell in column for seed in str(cell).split(",")}
    return ",".join(map(str, sorted(seeds)))


def _n_seeds(column: pd.Series) -> str:
    """How many seeds back a loss's numbers, and which: `3 seeds 0,1,2`."""
    seeds = _seed_union(column)
    count = len(seeds.split(","))
    return f"{count} seed{'s' if count > 1 else ''} {seeds}"


def _columns(losses: list[str], labels: dict[str, str], baseline: str | None, stats: Cells,
             deltas: Cells, prefix: str = "", seeds: dict[str, set[int]] | None = None,
             survivors: frozenset[tuple] = frozenset()) -> tuple[list[str], Callable[[tuple, int], list[str]]]:
    """Header cells and a row-cell function: one column per loss, then a Δ per non-baseline loss.
    `seeds`: each loss's seeds in the table (its title's count), so a cell with fewer says so."""
    seeds = seeds or {}
    others = [loss for loss in losses if loss != baseline] if baseline else []
    header = [f"{prefix}{labels.get(loss, loss)}" for loss in losses]
    header += [f"{prefix}Δ {labels.get(loss, loss)}−{labels.get(baseline, baseline)}" for loss in others] \
        if baseline else []

    def pairs_expected(loss: str) -> int:  # as many pairs as the column titles state seeds
        return max(len(seeds.get(loss, ())), len(seeds.get(baseline or "", ())))

    def cells(key: tuple, decimals: int) -> list[str]:
        values = [mean_cell(stats.get((*key, loss)), decimals, len(seeds.get(loss, ()))) for loss in losses]
        return values + [_delta(stats, deltas, key, decimals, loss, baseline, pairs_expected(loss), survivors)
                         for loss in others] if baseline else values

    return header, cells


def _by_key(frame: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """(*KEYS, loss) -> the row as a dict: a cell's lookups, without pandas' per-lookup cost."""
    keys = zip(*(frame[k] for k in [*KEYS, "loss"]), strict=True)
    return dict(zip(keys, frame.to_dict("records"), strict=True))


def tables(table: pd.DataFrame, baseline: str = DEFAULT_BASELINE, deltas: pd.DataFrame | None = None,
           survivors: frozenset[tuple] = frozenset()) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the human-readable formats show, from `tidy` output.

    Every loss gets a column; each loss other than `baseline` (a loss tag, e.g. `cce`)
    also gets a Δ column against it, where the baseline was run. `deltas` (deltas.compute_deltas,
    computed here when not given) holds the Δ cells; `survivors` the (*key, loss) cells that
    survive the multiple-comparisons control (marked `**`).
    """
    agg = aggregate(table)
    stats = _by_key(agg)
    deltas = compute_deltas(table, baseline) if deltas is None else deltas
    deltas = _by_key(deltas)
    labels: dict[str, str] = table.attrs.get("labels", {})
    out = []
    for (suite, model), part in agg.groupby(["suite", "model"], sort=False):
        losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss != baseline, loss))
        base = baseline if baseline in losses and len(losses) > 1 else None
        seeds = "; ".join(f"{labels.get(loss, loss)} {_n_seeds(part[part['loss'] == loss]['seeds'])}"
                          for loss in losses)
        per_loss = {loss: {int(s) for cell in part[part["loss"] == loss]["seeds"] for s in str(cell).split(",")}
                    for loss in losses}
        prefix = f"{suite} / {model} ({seeds})"
        id_name = part[part["group"] == "id"]["dataset"].iloc[0]
        header, cells = _columns(losses, labels, base, stats, deltas, seeds=per_loss, survivors=survivors)
        rows = []
        for metric, (label, higher, dec) in ID_METRICS.items():
            key = (suite, model, "", id_name, "id", metric)
            if not any((*key, loss) in stats for loss in losses):
                continue
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            rows.append([f"{label}{arrow}", *cells(key, dec)])
        out.append((f"{prefix}: in-distribution ({id_name} test)", ["metric", *header], rows))

        named = [d for d in dict.fromkeys(part["detector"]) if d]
        detectors = [d for d in named if not d.endswith(TUNED)]  # the main tables: default settings
        tuned = [d for d in named if d.endswith(TUNED)]
        for metric, (label, higher) in OOD_HEADLINE.items():
            full = ["detector"]
            for group in GROUPS:
                full += _columns(losses, labels, base, stats, deltas, prefix=f"{group} ", seeds=per_loss)[0]
            rows = []
            for det in detectors:
                row = [det]
                for group in GROUPS:
                    row += cells((suite, model, det, f"{group} mean", group, metric), 2)
                rows.append(row)
            out.append((f"{prefix}: OOD {label} {'↑' if higher else '↓'}, mean over near / far sets",
                        full, rows))
        if tuned:
            out.append(_tuned_table(prefix, part, stats, tuned, losses, [labels.get(loss, loss) for loss in losses]))

        full = ["OOD set", "group", "detector"]
        for label, _ in OOD_HEADLINE.values():
            full += _columns(losses, labels, base, stats, deltas, prefix=f"{label.split(' ')[0]} ",
                             seeds=per_loss)[0]
        rows = []
        sets = part[~part["group"].isin(["id", "tuning"]) & ~part["dataset"].str.endswith(" mean")]
        for dataset, group in dict.fromkeys(zip(sets["dataset"], sets["group"], strict=True)):
            for det in detectors:
                row = [dataset, group, det]
                for metric in OOD_HEADLINE:
                    row += cells((suite, model, det, dataset, group, metric), 2)
                rows.append(row)
        out.append((f"{prefix}: per OOD set", full, rows))
        out.extend(published_tables(suite))
    return out


def _tuned_table(prefix: str, part: pd.DataFrame, stats: Cells, tuned: list[str], losses: list[str],
                 labels: list[str]) -> tuple[str, list[str], list[list[str]]]:
    """Detectors with hyperparameters chosen on validation data: AUROC near / far and the choice."""
    suite, model = part["suite"].iloc[0], part["model"].iloc[0]
    header = ["detector", *(f"{g} AUROC {lab}" for g in ("near", "far") for lab in labels),
              *(f"chosen {lab}" for lab in labels)]
    rows = []
    for det in tuned:
        row = [det]
        for group in ("near", "far"):
            row += [mean_cell(stats.get((suite, model, det, f"{group} mean", group, "auroc", loss)), 2)
                    for loss in losses]
        params = dict.fromkeys(part[(part["detector"] == det) & (part["group"] == "tuning")]["metric"])
        for loss in losses:
            chosen = []
            for param in params:
                try:
                    cell = stats[(suite, model, det, "chosen", "tuning", param, loss)]
                except KeyError:
                    continue
                spread = f" ± {cell['std']:.3g}" if cell["n"] > 1 and not np.isnan(cell["std"]) else ""
                chosen.append(f"{param}={cell['mean']:.4g}{spread}")
            row.append(", ".join(chosen) or "–")
        rows.append(row)
    title = (f"{prefix}: tuned on validation (ID val vs OOD val, AUROC; test data never used), "
             "mean over near / far test sets")
    return title, header, rows


PUBLISHED = Path(__file__).with_name("published.yaml")


def published_tables(suite: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Published reference numbers for `suite` (its `-openood` / `-classic` variants too).

    They come from other code and recipes: a reader sets them beside the tables above to
    see which score, if any, reproduces them; nothing here is compared automatically.
    """
    import yaml

    base = suite.split("-")[0]
    out = []
    for entry in yaml.safe_load(PUBLISHED.read_text()):
        if entry["suite"] == base:
            losses = list(dict.fromkeys(k for row in entry["rows"] for k in row if k != "metric"))
            header = ["metric", *(LOSSES[k].label if k in LOSSES else k for k in losses)]
            rows = [[row["metric"], *(str(row.get(k, "–")) for k in losses)] for row in entry["rows"]]
            out.append((f"{suite}: published, {entry['source']}", header, rows))
    return out


def integrity_notes(table: pd.DataFrame) -> list[str]:
    """What a reader must know about the files behind the tables: evaluations of earlier
    checkpoints left out, and scores files that do not belong to their results."""
    from .stats import scores_mismatch

    lines = []
    dropped = table.attrs.get("dropped", 0)
    if dropped:
        lines.append(f"{dropped} evaluation(s) of earlier checkpoints of the same runs were left out; only the "
                     "evaluations of each run's current checkpoint count.")
    lines += scores_mismatch(table.attrs.get("scores", {}))
    return lines


NOTES = (
    "Mean ± sample standard deviation over seeds. Scores: higher = more in-distribution. "
    "FPR@95: fraction of OOD samples accepted at the threshold that keeps 95% of ID samples "
    "(ID positive); the OpenOOD convention (`fpr95_openood`) and AUPR-in/out are in the CSV/JSON "
    "formats. Detectors at their default settings (docs/protocol.md, section 4) in the main tables; "
    "NAME[tuned] rows (eval --tune) chose their hyperparameters by AUROC on the suite's validation "
    "sets, never on test data. TS: temperature scaling fitted by NLL on the ID-validation split. "
    "mahalanobis reads the head's embedding; mds, rmds, knn, vim, react and ash the backbone's "
    "penultimate features (as OpenOOD). "
    "HALO's baselines read its logits relative to the abstain class. Runs of different recipes "
    "or OOD sets are never averaged: the model label names what differs. Δ: the mean over seeds of "
    "each seed's difference to the baseline run of the same seed (same initialisation and data order), "
    "with its 95% t interval in brackets (p-values: the paired t-test). With one shared seed the "
    "interval, marked (bootstrap), is a 95% percentile bootstrap over test samples instead: 1000 resamples "
    "(seed 0) of the ID set and of each OOD set, the same resampled samples for both runs, from their "
    "scores.csv.gz (acc and ECE from the msp column; no interval without it or without the scores files). "
    "Columns without shared seeds are compared unpaired, and say so. Each title says how many seeds back "
    "each loss's numbers; a cell backed by fewer says so, e.g. (2 of 3 seeds). A run evaluated several times "
    "(e.g. `eval --detectors ...` after a bench) counts each detector from its newest evaluation of the run's "
    "current checkpoint."
)


def notes_text(found: Findings) -> str:
    """The notes under every report: what the numbers are, and what its marks mean."""
    return NOTES + (f" ** marks a Δ whose interval excludes 0 and that survives {ADJUSTMENT_NAMES[found.method]} "
                    f"at {found.alpha:g} over the {found.tested} tested cells (the Findings section); * one that "
                    "excludes 0 before the adjustment only. Per-OOD-set cells are outside the tested family and "
                    "carry * at most, even where a set is its group's only one and its cell equals the tested "
                    "group mean. An interval cut at the largest possible difference of its metric says (clipped).")
