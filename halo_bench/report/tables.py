"""results files -> one tidy table and the comparison tables every format shows.

Everything goes through `tidy` (one row per run, detector, set, metric); the
human-readable tables, the paired differences and their intervals are computed from
it, so the formats cannot disagree. Reads JSON only: no torch, no timm."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import HaloBenchError
from ..losses import LOSSES, knob_fields
from ..results import GROUPS, RESULTS_GLOB, check_results, scores_reference
from ..train.config import RUNTIME_FIELDS

DEFAULT_BASELINE = "cce"


# metric -> (label, higher is better, decimals)
ID_METRICS = {
    "acc": ("acc (%)", True, 2),
    "ece": ("ECE", False, 4),
    "aece": ("adaptive ECE", False, 4),
    "nll": ("NLL", False, 4),
    "brier": ("Brier", False, 4),
    "aurc": ("AURC", False, 4),
    "abstain_rate": ("abstain rate (%)", False, 2),
    # Temperature scaling fitted on the ID-validation split (suites that have one).
    "ts_temperature": ("TS temperature (fitted on ID val)", None, 3),
    "ts_ece": ("ECE after TS", False, 4),
    "ts_nll": ("NLL after TS", False, 4),
    "ts_brier": ("Brier after TS", False, 4),
}


TUNED = "[tuned]"  # label suffix of detectors whose hyperparameters --tune chose


OOD_HEADLINE = {"auroc": ("AUROC (%)", True), "fpr95": ("FPR@95 (%), ID positive", False)}


KEYS = ["suite", "model", "detector", "dataset", "group", "metric"]


def find_results(paths: Iterable[str | Path], root: str | Path = "runs") -> list[Path]:
    """Expand the given files/directories (or, with none, everything under `root`)."""
    paths = list(paths)
    if not paths:
        root = Path(root)
        if not root.is_dir():
            raise HaloBenchError(
                f"no results: {root} does not exist. Run `halo-bench eval` or `halo-bench bench` first.")
        paths = [root]
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.rglob(RESULTS_GLOB)))
        elif path.is_file():
            found.append(path)
        else:
            raise HaloBenchError(f"{path} does not exist.")
    if not found:
        from ..models.runs import run_folders

        trained = [run for path in map(Path, paths) if path.is_dir() for run in run_folders(path)]
        hint = (f" {len(trained)} trained run(s) there have not been evaluated yet: run `halo-bench eval "
                f"{trained[0] / 'ckpt.pt'}` for each (or `halo-bench bench`, which trains and evaluates)."
                if trained else " Run `halo-bench bench`, or `halo-bench eval` on a checkpoint, first.")
        raise HaloBenchError(f"no results.json under {', '.join(map(str, paths))}.{hint}")
    return found


def select(results: list[dict[str, Any]], include_incomplete: bool = False
           ) -> tuple[list[dict[str, Any]], list[str]]:
    """(results to report, one line per result left out and why).

    Partial evaluations (`eval --limit`) never count; runs whose training did not
    finish count only with `include_incomplete`, and their loss label then says so.
    """
    kept, left_out = [], []
    for res in results:
        ckpt = res.get("checkpoint", {})
        if res.get("partial"):
            left_out.append(f"{res['run']}: partial evaluation (--limit {res['partial'].get('limit')}), "
                            f"{res['_path']}")
        elif not ckpt.get("complete"):
            epochs = res.get("train_config", {}).get("epochs")
            what = f"{res['run']}: training unfinished (epoch {ckpt.get('epochs')} of {epochs})"
            if include_incomplete:
                res = {**res, "loss": {**res.get("loss", {}), "tag": _loss_tag(res) + " [unfinished]",
                                       "label": _loss_display(res) + " [unfinished]"}}
                kept.append(res)
            else:
                left_out.append(f"{what}, {res['_path']}; --include-incomplete reports it")
        else:
            kept.append(res)
    if not kept:
        raise HaloBenchError("nothing to report: every result was left out:\n" + "\n".join(left_out))
    return kept, left_out


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    results = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HaloBenchError(f"{path}: not a readable results file ({exc}).") from None
        doc = check_results(doc, path)
        doc["_path"] = str(path)
        results.append(doc)
    return results


# Training-config fields that never split runs into separate groups: the loss and its knobs
# make the columns (halo-bench 0.1 kept the knobs as top-level fields of the config).
_NOT_RECIPE = {"seed", "loss", "model", "suite", "loss_knobs", *knob_fields(), *RUNTIME_FIELDS}


def _loss_tag(res: dict[str, Any]) -> str:
    """The loss and its non-default knobs (`cce`, `cce+ls0.1`): one column of the report."""
    return str(res.get("loss", {}).get("tag") or res["model"]["loss"])


def _loss_display(res: dict[str, Any]) -> str:
    loss = res.get("loss", {})
    if loss.get("label"):
        return str(loss["label"])
    name = res["model"]["loss"]
    return LOSSES[name].label if name in LOSSES else name


def _recipe(res: dict[str, Any]) -> dict[str, Any]:
    """What must match for runs to be averaged and compared: training recipe and OOD sets."""
    # Numbers compare by value: a registry's `grad_clip: 5` and a flag's 5.0 are one recipe.
    config = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
              for k, v in res.get("train_config", {}).items() if k not in _NOT_RECIPE}
    return {**config, "ood_sets": ",".join(sorted(d for d, v in res.get("datasets", {}).items()
                                                     if v.get("group") != "id"))}


def _variants(results: list[dict[str, Any]]) -> list[str]:
    """Per result, its model label: the name, plus the recipe fields that set it apart."""
    labels = []
    mine_all = [_recipe(res) for res in results]
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for res, mine in zip(results, mine_all, strict=True):
        by_model.setdefault((res["suite"], res["model"]["name"]), []).append(mine)
    for res, mine in zip(results, mine_all, strict=True):
        recipes = by_model[(res["suite"], res["model"]["name"])]
        differing = sorted(k for k in set().union(*recipes) if len({json.dumps(r.get(k)) for r in recipes}) > 1)
        suffix = ", ".join(f"{k}={_fmt(mine.get(k))}" for k in differing)
        labels.append(res["model"]["name"] + (f" [{suffix}]" if suffix else ""))
    return labels


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def tidy(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, detector, dataset, metric). ID metrics have detector ''.

    Runs are grouped by suite, model and recipe (runs of different recipes or OOD sets
    are never averaged: their model label names the difference) and by loss. A run may
    have several evaluations (`eval` writes one file per detector set, limit and setting):
    they are merged, each detector's numbers from the newest evaluation that has it, the
    ID metrics from the newest; evaluations of an earlier checkpoint of the run are left
    out and counted in `attrs["dropped"]`.
    """
    rows = []
    evaluations: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    for res, model in zip(results, _variants(results), strict=True):
        labels[_loss_tag(res)] = _loss_display(res)
        evaluations.setdefault((res["suite"], model, _loss_tag(res), res["seed"]), []).append(res)
    dropped = 0
    scores: dict[tuple[str, str, str, int], tuple[str, str | None]] = {}
    for (suite, model, loss, seed), docs in evaluations.items():
        docs = sorted(docs, key=lambda r: r["created"], reverse=True)
        newest = docs[0]
        current = [r for r in docs if r.get("checkpoint", {}).get("sha256") == newest.get("checkpoint", {}).get("sha256")]
        dropped += len(docs) - len(current)
        base = {"suite": suite, "model": model, "loss": loss, "seed": seed}
        path, sha = scores_reference(newest, newest.get("_path", ""))
        scores[(suite, model, loss, seed)] = (str(path), sha)
        for metric, value in newest["id_metrics"].items():
            rows.append({**base, "detector": "", "dataset": newest["id_dataset"], "group": "id",
                         "metric": metric, "value": value})
        taken: set[str] = set()
        for res in current:
            for det, det_res in res["ood"].items():
                if det in taken:
                    continue
                taken.add(det)
                rows.extend(_detector_rows(base, res, det, det_res))
    table = pd.DataFrame(rows, columns=["suite", "model", "loss", "seed", *KEYS[2:], "value"])
    table.attrs["dropped"] = dropped
    table.attrs["labels"] = labels
    table.attrs["scores"] = scores  # each run's scores file and its recorded hash (stats.run_scores)
    return table


def _detector_rows(base: dict[str, Any], res: dict[str, Any], det: str, det_res: dict[str, Any]
                   ) -> list[dict[str, Any]]:
    """A detector's rows of one evaluation: per OOD set, per near/far mean, and --tune's choice."""
    rows = []
    for dataset, values in det_res["sets"].items():
        for metric, value in values.items():
            if metric != "group":
                rows.append({**base, "detector": det, "dataset": dataset, "group": values["group"],
                             "metric": metric, "value": value})
    for group in GROUPS:
        for metric, value in det_res.get(group, {}).items():
            rows.append({**base, "detector": det, "dataset": f"{group} mean", "group": group,
                         "metric": metric, "value": value})
    tuning = res.get("detectors", {}).get(det, {}).get("tuning")
    for param, value in (tuning or {}).get("chosen", {}).items():  # what --tune chose, per run
        rows.append({**base, "detector": det, "dataset": "chosen", "group": "tuning",
                     "metric": param, "value": value})
    return rows


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation and number of seeds per loss and key."""
    grouped = table.groupby([*KEYS, "loss"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count")
    seeds = table.groupby([*KEYS, "loss"], sort=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    return out.assign(seeds=seeds).reset_index()


CONFIDENCE = 0.95


def paired_differences(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per key and loss: the mean of per-seed differences to `baseline` with a 95% t interval.

    Runs of one seed share initialisation and data order across losses, so the
    difference is taken seed by seed (only seeds both losses have), then averaged;
    the interval is the t interval over those differences (none for a single seed).
    """
    from scipy import stats as st

    base = table[table["loss"] == baseline][[*KEYS, "seed", "value"]]
    others = table[table["loss"] != baseline]
    merged = others.merge(base, on=[*KEYS, "seed"], suffixes=("", "_base"))
    merged = merged.assign(diff=merged["value"] - merged["value_base"])
    rows = []
    for key, group in merged.groupby([*KEYS, "loss"], sort=False):
        diffs = group["diff"].to_numpy(dtype=float)
        n, mean = len(diffs), float(diffs.mean())
        half = np.nan
        if n > 1:
            sd = float(diffs.std(ddof=1))
            half = float(st.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / np.sqrt(n) if sd > 0 else 0.0
        rows.append({**dict(zip([*KEYS, "loss"], key, strict=True)), "delta": mean, "delta_lo": mean - half,
                     "delta_hi": mean + half, "pairs": n})
    return pd.DataFrame(rows, columns=[*KEYS, "loss", "delta", "delta_lo", "delta_hi", "pairs"])


def with_bootstrap(deltas: pd.DataFrame, table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`paired_differences` output with single-pair rows given a bootstrap interval over test
    samples (stats.bootstrap_table) where both runs' scores.csv.gz are there."""
    from .stats import bootstrap_table

    boot = bootstrap_table(table, baseline)
    merged = deltas.merge(boot, on=[*KEYS, "loss"], how="left", suffixes=("", "_boot"))
    for column in ("delta_lo", "delta_hi", "delta_lo_boot", "delta_hi_boot"):
        merged[column] = merged[column].astype(float)
    single = (merged["pairs"] == 1) & merged["delta_lo_boot"].notna()
    merged.loc[single, "delta_lo"] = merged.loc[single, "delta_lo_boot"]
    merged.loc[single, "delta_hi"] = merged.loc[single, "delta_hi_boot"]
    merged["interval"] = np.where(merged["pairs"] > 1, "t over seeds",
                                  np.where(single, "bootstrap over samples", "none"))
    # * in the tables: the interval excludes 0
    merged["excludes_zero"] = (merged["delta_lo"] > 0) | (merged["delta_hi"] < 0)
    return merged.drop(columns=["delta_lo_boot", "delta_hi_boot", "resamples"])


def _cell(stats: pd.DataFrame, key: tuple, loss: str, decimals: int, expected: int = 0) -> str:
    """Mean ± std over seeds; a cell backed by fewer seeds than its column's title says so."""
    try:
        row = stats.loc[(*key, loss)]
    except KeyError:
        return "–"
    text = f"{row['mean']:.{decimals}f}"
    if row["n"] > 1 and not np.isnan(row["std"]):
        text += f" ± {row['std']:.{decimals}f}"
    return text + _fewer(int(row["n"]), expected, "seed")


def _fewer(n: int, expected: int, what: str) -> str:
    return f" ({n} of {expected} {what}s)" if 0 < n < expected else ""


def _delta(stats: pd.DataFrame, deltas: pd.DataFrame, key: tuple, decimals: int, loss: str,
           baseline: str, expected: int = 0) -> str:
    """Paired mean difference with its 95% interval, `*` where the interval excludes 0;
    without shared seeds, the difference of the means, marked unpaired. Fewer pairs than
    the seeds both columns share are said in the cell."""
    if (*key, loss) in deltas.index:
        row = deltas.loc[(*key, loss)]
        text = f"{row['delta']:+.{decimals}f}"
        lo, hi = row["delta_lo"], row["delta_hi"]
        if row["pairs"] > 1 or not (np.isnan(lo) or np.isnan(hi)):
            text += f" [{lo:+.{decimals}f}, {hi:+.{decimals}f}]" + ("*" if lo > 0 or hi < 0 else "")
            text += " (bootstrap)" if row["pairs"] == 1 else ""
        return text + _fewer(int(row["pairs"]), expected, "pair")
    try:
        value, base = stats.loc[(*key, loss), "mean"], stats.loc[(*key, baseline), "mean"]
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


def _columns(losses: list[str], labels: dict[str, str], baseline: str | None, stats: pd.DataFrame,
             deltas: pd.DataFrame, prefix: str = "", seeds: dict[str, set[int]] | None = None
             ) -> tuple[list[str], Callable[[tuple, int], list[str]]]:
    """Header cells and a row-cell function: one column per loss, then a Δ per non-baseline loss.
    `seeds`: each loss's seeds in the table (its title's count), so a cell with fewer says so."""
    seeds = seeds or {}
    others = [loss for loss in losses if loss != baseline] if baseline else []
    header = [f"{prefix}{labels.get(loss, loss)}" for loss in losses]
    header += [f"{prefix}Δ {labels.get(loss, loss)}−{labels.get(baseline, baseline)}" for loss in others] \
        if baseline else []

    def shared(loss: str) -> int:
        return len(seeds.get(loss, set()) & seeds.get(baseline or "", set()))

    def cells(key: tuple, decimals: int) -> list[str]:
        values = [_cell(stats, key, loss, decimals, len(seeds.get(loss, ()))) for loss in losses]
        return values + [_delta(stats, deltas, key, decimals, loss, baseline, shared(loss)) for loss in others] \
            if baseline else values

    return header, cells


def tables(table: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the human-readable formats show, from `tidy` output.

    Every loss gets a column; each loss other than `baseline` (a loss tag, e.g. `cce`)
    also gets a Δ column against it, where the baseline was run.
    """
    agg = aggregate(table)
    stats = agg.set_index([*KEYS, "loss"]).sort_index()
    deltas = with_bootstrap(paired_differences(table, baseline), table, baseline)
    deltas = deltas.set_index([*KEYS, "loss"]).sort_index()
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
        header, cells = _columns(losses, labels, base, stats, deltas, seeds=per_loss)
        rows = []
        for metric, (label, higher, dec) in ID_METRICS.items():
            key = (suite, model, "", id_name, "id", metric)
            if not any((*key, loss) in stats.index for loss in losses):
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


def _tuned_table(prefix: str, part: pd.DataFrame, stats: pd.DataFrame, tuned: list[str], losses: list[str],
                 labels: list[str]) -> tuple[str, list[str], list[list[str]]]:
    """Detectors with hyperparameters chosen on validation data: AUROC near / far and the choice."""
    suite, model = part["suite"].iloc[0], part["model"].iloc[0]
    header = ["detector", *(f"{g} AUROC {lab}" for g in ("near", "far") for lab in labels),
              *(f"chosen {lab}" for lab in labels)]
    rows = []
    for det in tuned:
        row = [det]
        for group in ("near", "far"):
            row += [_cell(stats, (suite, model, det, f"{group} mean", group, "auroc"), loss, 2) for loss in losses]
        params = dict.fromkeys(part[(part["detector"] == det) & (part["group"] == "tuning")]["metric"])
        for loss in losses:
            chosen = []
            for param in params:
                try:
                    cell = stats.loc[(suite, model, det, "chosen", "tuning", param, loss)]
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
    "with its 95% t interval in brackets; * marks an interval that excludes 0. With one shared seed the "
    "interval, marked (bootstrap), is a 95% percentile bootstrap over test samples instead: 1000 resamples "
    "(seed 0) of the ID set and of each OOD set, the same resampled samples for both runs, from their "
    "scores.csv.gz (acc and ECE from the msp column; no interval without it or without the scores files). "
    "Columns without shared seeds are compared unpaired, and say so. Each title says how many seeds back "
    "each loss's numbers; a cell backed by fewer says so, e.g. (2 of 3 seeds). A run evaluated several times "
    "(e.g. `eval --detectors ...` after a bench) counts each detector from its newest evaluation of the run's "
    "current checkpoint."
)
