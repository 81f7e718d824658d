"""Synthetic evaluated runs for report benchmarks and tests: per-sample scores drawn at random,
and results documents computed from them with the evaluation's own metric functions, so every
number in a report over them can be recomputed from the scores files beside them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.io import sha256_bytes
from ..evaluate import metrics
from ..results import RESULTS_SCHEMA, RESULTS_VERSION

# The embedded suite's shapes: ID test set, and near/far OOD sets with their sizes.
SETS = {"digits-6to9": ("near", 714), "textures": ("far", 600), "photos": ("far", 600), "faces": ("far", 300),
        "noise": ("far", 600)}
DETECTORS = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "gen", "knn", "vim", "react", "ash", "mds", "rmds")
HALO_DETECTORS = ("halo_abstain", "halo_distance")


def write_run(folder: Path, loss: str, seed: int, quality: float, n_id: int = 325, k: int = 6,
              sets: dict[str, tuple[str, int]] | None = None, detectors: tuple[str, ...] = DETECTORS,
              versions: dict[str, Any] | None = None, created: str = "2026-11-28T00:00:00+00:00") -> Path:
    """One evaluated run of `loss` and `seed` under `folder`; `quality` moves ID scores up."""
    sets = SETS if sets is None else sets
    dets = detectors + (HALO_DETECTORS if loss == "halo" else ())
    rng = np.random.default_rng([seed, sum(map(ord, loss))])
    labels = rng.integers(0, k, n_id)
    logits = rng.normal(0, 1, (n_id, k))
    logits[np.arange(n_id), labels] += quality * rng.uniform(0, 4, n_id)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    id_scores = {d: rng.normal(quality * (1 + i % 3) / 2, 1, n_id) for i, d in enumerate(dets)}
    id_scores["msp"] = np.log(probs.max(axis=1))
    frames = [pd.DataFrame({"dataset": "digits", "group": "id", "index": np.arange(n_id), "label": labels,
                            "pred": probs.argmax(axis=1), **id_scores})]
    ood: dict[str, Any] = {d: {"sets": {}} for d in dets}
    for name, (group, n) in sets.items():
        shift = 0.5 if group == "near" else 0.0
        columns = {d: rng.normal(shift, 1, n) for d in dets}
        ood_logits = rng.normal(0, 1, (n, k))
        ood_probs = np.exp(ood_logits) / np.exp(ood_logits).sum(axis=1, keepdims=True)
        columns["msp"] = np.log(ood_probs.max(axis=1))
        frames.append(pd.DataFrame({"dataset": name, "group": group, "index": np.arange(n), "label": -1,
                                    "pred": ood_probs.argmax(axis=1), **columns}))
        for d in dets:
            ood[d]["sets"][name] = {"group": group, **metrics.ood_metrics(id_scores[d], columns[d])}
    for d in dets:
        for group in ("near", "far"):
            rows = [v for v in ood[d]["sets"].values() if v["group"] == group]
            if rows:
                ood[d][group] = {m: float(np.mean([r[m] for r in rows])) for m in metrics.OOD_METRICS}
    run = folder / f"digits-resnet18-{loss}-s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(pd.concat(frames, ignore_index=True).to_csv(index=False, float_format="%.17g").encode(),
                         mtime=0)
    (run / "scores.csv.gz").write_bytes(data)
    doc = {
        "schema": RESULTS_SCHEMA, "schema_version": RESULTS_VERSION, "created": created, "run": run.name,
        "evaluation": {"id": f"{loss}{seed}", "name": "default"}, "command": None,
        "suite": "digits", "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "loss": {"name": loss, "tag": loss, "label": loss.upper(), "knobs": {}, "changed": {}},
        "checkpoint": {"path": str(run / "ckpt.pt"), "sha256": f"{seed:064d}", "complete": True, "epochs": 10},
        "id_metrics": metrics.id_metrics(probs, labels, k), "ood": ood,
        "train_config": {"epochs": 10, "seed": seed, "loss": loss, "lr": 0.05},
        "datasets": {"digits": {"group": "id", "n": n_id}, **{s: {"group": g, "n": n} for s, (g, n) in sets.items()}},
        "detectors": {d: {"detector": d, "params": {}, "halo_only": d in HALO_DETECTORS} for d in dets},
        "eval_config": {"detectors": None, "ood": None, "limit": None},
        "data_root": "/data", "device": "cpu",
        "versions": versions or {"halo-bench": "0.2.0", "torch": "2.15.0", "timm": "1.0.31", "torchvision": "0.29.2",
                                 "device": "cpu", "torch_threads": 2},
        "scores_file": {"name": "scores.csv.gz", "sha256": sha256_bytes(data)},
    }
    (run / "results.json").write_text(json.dumps(doc))
    return run / "results.json"


def write_bench(folder: Path, losses: tuple[str, ...] = ("cce", "halo"), seeds: tuple[int, ...] = (0, 1, 2),
                **kwargs: Any) -> list[Path]:
    """Every (loss, seed) run of a synthetic bench; later losses score a little better."""
    return [write_run(folder, loss, seed, 1.0 + 0.5 * i, **kwargs) for i, loss in enumerate(losses) for seed in seeds]
