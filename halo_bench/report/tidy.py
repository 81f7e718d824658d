"""results files -> one tidy table: one row per (run, detector, dataset, metric).

Finding and loading results files, leaving out partial and unfinished evaluations, grouping
runs by suite, model, recipe and loss, merging the evaluations of one run, and the mean,
standard deviation and seed count per cell. Reads JSON only: no torch, no timm.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
UNFINISHED = "[unfinished]"  # what --include-incomplete adds to an unfinished run's loss tag and label


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
                res = {**res, "loss": {**res.get("loss", {}), "tag": f"{_loss_tag(res)} {UNFINISHED}",
                                       "label": f"{_loss_display(res)} {UNFINISHED}"}}
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
    # What the evaluation's datasets are (Registry.fingerprint; absent from older files): runs
    # evaluated on data defined otherwise (e.g. another `noise` set) are never averaged together.
    data = res.get("data_fingerprint")
    return {**config, "ood_sets": ",".join(sorted(d for d, v in res.get("datasets", {}).items()
                                                     if v.get("group") != "id")),
            "data": data[:8] if data else None}


def _variants(results: list[dict[str, Any]]) -> list[str]:
    """Per result, its model label: the name, plus the recipe fields that set it apart."""
    labels = []
    mine_all = [_recipe(res) for res in results]
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for res, mine in zip(results, mine_all, strict=True):
        by_model.setdefault((res["suite"], res["model"]["name"]), []).append(mine)
    for recipes in by_model.values():  # an older file's unknown data match any: split only known differences
        if len({r["data"] for r in recipes} - {None}) <= 1:
            for r in recipes:
                r.pop("data")
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
    scores: dict[tuple[str, str, str, int], list[tuple[str, str | None]]] = {}
    for (suite, model, loss, seed), docs in evaluations.items():
        docs = sorted(docs, key=lambda r: r["created"], reverse=True)
        newest = docs[0]
        current = [r for r in docs if r.get("checkpoint", {}).get("sha256") == newest.get("checkpoint", {}).get("sha256")]
        dropped += len(docs) - len(current)
        base = {"suite": suite, "model": model, "loss": loss, "seed": seed}
        # every evaluation's scores file, newest first: stats.run_scores merges their columns
        scores[(suite, model, loss, seed)] = [(str(path), sha) for path, sha in
                                              (scores_reference(r, r.get("_path", "")) for r in current)]
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
    table.attrs["labels"] = Shared(labels)
    table.attrs["scores"] = Shared(scores)  # each run's scores files and their recorded hashes (stats.run_scores)
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
    """Mean, sample standard deviation (NaN for one seed) and number of seeds per loss and key."""
    grouped = table.groupby([*KEYS, "loss"], sort=False)
    out = grouped["value"].agg(mean="mean", std="std", n="count")
    seeds = grouped["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    return out.assign(seeds=seeds).reset_index()


class Shared(dict):
    """A dict kept in a DataFrame's `attrs` that pandas need not copy: it deep-copies `attrs` on
    every operation, and the report never changes these after `tidy`."""

    def __deepcopy__(self, memo: dict) -> Shared:
        return self
