"""results.json files -> CCE vs HALO comparison tables (markdown, CSV, JSON, LaTeX).

Everything goes through one tidy table (one row per run, detector, set, metric);
every format renders that table, so the formats cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from .errors import HaloBenchError, unknown_name
from .evaluate import RESULTS_SCHEMA
from .train import RUNTIME_FIELDS, TrainConfig

LOSS_LABEL = {"cce": "CCE", "halo": "HALO"}
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
            found.extend(sorted(path.rglob("results.json")))
        elif path.is_file():
            found.append(path)
        else:
            raise HaloBenchError(f"{path} does not exist.")
    if not found:
        raise HaloBenchError(f"no results.json under {', '.join(map(str, paths))}.")
    return found


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    results = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HaloBenchError(f"{path}: not a readable results file ({exc}).") from None
        if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
            raise HaloBenchError(f"{path}: not a halo-bench results file (no schema {RESULTS_SCHEMA!r}).")
        doc["_path"] = str(path)
        results.append(doc)
    return results


# What a run's loss is, beyond its name: HALO's own knobs, shown in its label when not default.
HALO_KNOBS = {f.name: f.default for f in fields(TrainConfig) if f.name in ("label_smoothing", "distill", "learn_gamma")}
# Training-config fields that never split runs into separate groups.
_NOT_RECIPE = {"seed", "loss", "model", "suite", *HALO_KNOBS, *RUNTIME_FIELDS}


def _loss_label(res: dict[str, Any]) -> str:
    loss = res["model"]["loss"]
    config = res.get("train_config", {})
    changed = {k: config[k] for k, default in HALO_KNOBS.items()
               if loss == "halo" and config.get(k, default) != default}
    return loss + "".join(f" {k}={v}" for k, v in changed.items())


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
    are never averaged: their model label names the difference) and by loss; of
    several evaluations of one run, the newest is kept and the rest counted in
    `attrs["dropped"]`.
    """
    rows = []
    latest: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for res, model in zip(results, _variants(results), strict=True):
        key = (res["suite"], model, _loss_label(res), res["seed"])
        if key not in latest or res["created"] > latest[key]["created"]:
            latest[key] = res
    for (suite, model, loss, seed), res in latest.items():
        base = {"suite": suite, "model": model, "loss": loss, "seed": seed}
        for metric, value in res["id_metrics"].items():
            rows.append({**base, "detector": "", "dataset": res["id_dataset"], "group": "id",
                         "metric": metric, "value": value})
        for det, det_res in res["ood"].items():
            for dataset, values in det_res["sets"].items():
                for metric, value in values.items():
                    if metric != "group":
                        rows.append({**base, "detector": det, "dataset": dataset, "group": values["group"],
                                     "metric": metric, "value": value})
            for group in ("near", "far"):
                for metric, value in det_res.get(group, {}).items():
                    rows.append({**base, "detector": det, "dataset": f"{group} mean", "group": group,
                                 "metric": metric, "value": value})
            tuning = res.get("detectors", {}).get(det, {}).get("tuning")
            for param, value in (tuning or {}).get("chosen", {}).items():  # what --tune chose, per run
                rows.append({**base, "detector": det, "dataset": "chosen", "group": "tuning",
                             "metric": param, "value": value})
    table = pd.DataFrame(rows, columns=["suite", "model", "loss", "seed", *KEYS[2:], "value"])
    table.attrs["dropped"] = len(results) - len(latest)
    return table


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation and number of seeds per loss and key."""
    grouped = table.groupby([*KEYS, "loss"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count")
    seeds = table.groupby([*KEYS, "loss"], sort=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    return out.assign(seeds=seeds).reset_index()


def _cell(stats: pd.DataFrame, key: tuple, loss: str, decimals: int) -> str:
    try:
        row = stats.loc[(*key, loss)]
    except KeyError:
        return "–"
    if row["n"] > 1 and not np.isnan(row["std"]):
        return f"{row['mean']:.{decimals}f} ± {row['std']:.{decimals}f}"
    return f"{row['mean']:.{decimals}f}"


def _delta(stats: pd.DataFrame, key: tuple, decimals: int, losses: list[str]) -> str:
    try:
        values = [stats.loc[(*key, loss), "mean"] for loss in losses]
    except KeyError:
        return "–"
    return f"{values[1] - values[0]:+.{decimals}f}"


def _loss_display(loss: str) -> str:
    name, *knobs = loss.split(" ")
    return " ".join([LOSS_LABEL.get(name, name), *knobs])


def _seed_union(column: pd.Series) -> str:
    seeds = {int(seed) for cell in column for seed in str(cell).split(",")}
    return ",".join(map(str, sorted(seeds)))


def tables(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the human-readable formats show, from `tidy` output."""
    agg = aggregate(table)
    stats = agg.set_index([*KEYS, "loss"]).sort_index()
    out = []
    for (suite, model), part in agg.groupby(["suite", "model"], sort=False):
        # CCE first, then HALO and any HALO variant (a HALO run with non-default knobs).
        losses = sorted(dict.fromkeys(part["loss"]), key=lambda loss: (loss.split()[0] != "cce", loss))
        labels = [_loss_display(loss) for loss in losses]
        compare = len(losses) == 2 and losses[0] == "cce"
        seeds = "; ".join(f"{_loss_display(loss)} seeds {_seed_union(part[part['loss'] == loss]['seeds'])}"
                          for loss in losses)
        prefix = f"{suite} / {model} ({seeds})"
        id_name = part[part["group"] == "id"]["dataset"].iloc[0]
        rows = []
        for metric, (label, higher, dec) in ID_METRICS.items():
            key = (suite, model, "", id_name, "id", metric)
            if not any((*key, loss) in stats.index for loss in losses):
                continue
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            row = [f"{label}{arrow}", *(_cell(stats, key, loss, dec) for loss in losses)]
            rows.append(row + ([_delta(stats, key, dec, losses)] if compare else []))
        delta = [f"Δ {labels[1]}−{labels[0]}"] if compare else []
        out.append((f"{prefix}: in-distribution ({id_name} test)", ["metric", *labels, *delta], rows))

        named = [d for d in dict.fromkeys(part["detector"]) if d]
        detectors = [d for d in named if not d.endswith(TUNED)]  # the main tables: default settings
        tuned = [d for d in named if d.endswith(TUNED)]
        for metric, (label, higher) in OOD_HEADLINE.items():
            header = ["detector"]
            for group in ("near", "far"):
                header += [f"{group} {lab}" for lab in labels] + ([f"{group} Δ"] if compare else [])
            rows = []
            for det in detectors:
                row = [det]
                for group in ("near", "far"):
                    key = (suite, model, det, f"{group} mean", group, metric)
                    row += [_cell(stats, key, loss, 2) for loss in losses]
                    row += [_delta(stats, key, 2, losses)] if compare else []
                rows.append(row)
            out.append((f"{prefix}: OOD {label} {'↑' if higher else '↓'}, mean over near / far sets",
                        header, rows))
        if tuned:
            out.append(_tuned_table(prefix, part, stats, tuned, losses, labels))

        header = ["OOD set", "group", "detector"]
        for label, _ in OOD_HEADLINE.values():
            short = label.split(" ")[0]
            header += [f"{short} {lab}" for lab in labels] + ([f"{short} Δ"] if compare else [])
        rows = []
        sets = part[~part["group"].isin(["id", "tuning"]) & ~part["dataset"].str.endswith(" mean")]
        for dataset, group in dict.fromkeys(zip(sets["dataset"], sets["group"], strict=True)):
            for det in detectors:
                row = [dataset, group, det]
                for metric in OOD_HEADLINE:
                    key = (suite, model, det, dataset, group, metric)
                    row += [_cell(stats, key, loss, 2) for loss in losses]
                    row += [_delta(stats, key, 2, losses)] if compare else []
                rows.append(row)
        out.append((f"{prefix}: per OOD set", header, rows))
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
            rows = [[row["metric"], str(row.get("cce", "–")), str(row.get("halo", "–"))] for row in entry["rows"]]
            out.append((f"{suite}: published, {entry['source']}", ["metric", "CCE", "HALO"], rows))
    return out


NOTES = (
    "Mean ± sample standard deviation over seeds. Scores: higher = more in-distribution. "
    "FPR@95: fraction of OOD samples accepted at the threshold that keeps 95% of ID samples "
    "(ID positive); the OpenOOD convention (`fpr95_openood`) and AUPR-in/out are in the CSV/JSON "
    "formats. Detectors at their default settings (PROTOCOL.md section 4) in the main tables; "
    "NAME[tuned] rows (eval --tune) chose their hyperparameters by AUROC on the suite's validation "
    "sets, never on test data. TS: temperature scaling fitted by NLL on the ID-validation split. "
    "mahalanobis reads the head's embedding; mds, rmds, knn, vim, react and ash the backbone's "
    "penultimate features (as OpenOOD). "
    "HALO's baselines read its logits relative to the abstain class. Runs of different recipes "
    "or OOD sets are never averaged: the model label names what differs."
)


def _render_markdown(results: list[dict[str, Any]]) -> str:
    table = tidy(results)
    parts = ["# halo-bench report", ""]
    for title, header, rows in tables(table):
        parts += [f"## {title}", "", tabulate(rows, header, tablefmt="github", disable_numparse=True), ""]
    parts += [NOTES, ""]
    dropped = table.attrs["dropped"]
    if dropped:
        parts += [f"{dropped} older evaluation(s) of the same runs were left out; the newest of each counts.", ""]
    return "\n".join(parts)


def _render_latex(results: list[dict[str, Any]]) -> str:
    parts = ["% halo-bench report; needs \\usepackage{booktabs}"]
    for title, header, rows in tables(tidy(results)):
        body = tabulate(rows, header, tablefmt="latex_booktabs", disable_numparse=True)
        parts += ["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex_escape(title)}}}", body,
                  "\\end{table}", ""]
    return "\n".join(parts)


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text


def _render_csv(results: list[dict[str, Any]]) -> str:
    return aggregate(tidy(results)).to_csv(index=False)


def _render_json(results: list[dict[str, Any]]) -> str:
    agg = aggregate(tidy(results))
    records = json.loads(agg.to_json(orient="records"))
    runs = [{"path": r["_path"], "run": r["run"], "checkpoint_sha256": r["checkpoint"]["sha256"]} for r in results]
    return json.dumps({"schema": "halo-bench/report", "runs": runs, "rows": records}, indent=2) + "\n"


FORMATS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "markdown": _render_markdown,
    "csv": _render_csv,
    "json": _render_json,
    "latex": _render_latex,
}


def render(results: list[dict[str, Any]], fmt: str = "markdown") -> str:
    if fmt not in FORMATS:
        raise unknown_name("report format", fmt, FORMATS)
    return FORMATS[fmt](results)
