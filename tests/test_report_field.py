"""The report with the detector field: TS rows, NAME[tuned] rows apart from the main tables with
their chosen values (mean ± std over seeds)."""

from __future__ import annotations

import json
from pathlib import Path

from halo_bench.report.render import render
from halo_bench.report.tidy import find_results, load_results
from halo_bench.results import RESULTS_SCHEMA


def _result(loss: str, seed: int, k_chosen: float) -> dict:
    far = {"auroc": 80.0 + seed, "fpr95": 30.0}
    ood = {"knn": {"sets": {"noise": {"group": "far", **far}}, "far": far},
           "knn[tuned]": {"sets": {"noise": {"group": "far", **far}}, "far": {**far, "auroc": 90.0}}}
    return {
        "schema": RESULTS_SCHEMA, "schema_version": 1, "created": "2026-01-01", "run": f"{loss}-{seed}",
        "suite": "digits", "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "checkpoint": {"sha256": "0" * 64, "complete": True, "epochs": 10}, "ood": ood,
        "id_metrics": {"acc": 90.0, "ece": 0.1, "ts_temperature": 1.5, "ts_ece": 0.02, "ts_nll": 0.3,
                       "ts_brier": 0.1},
        "detectors": {"knn": {"params": {"k": 50.0}},
                      "knn[tuned]": {"params": {"k": k_chosen}, "tuning": {"chosen": {"k": k_chosen}}}},
        "train_config": {"epochs": 10, "lr": 0.05, "seed": seed, "loss": loss, "device": "cpu"},
        "datasets": {"digits": {"group": "id"}, "noise": {"group": "far"}},
    }


def test_ts_and_tuned_rows(tmp_path: Path) -> None:
    for i, (loss, seed, k) in enumerate([("cce", 0, 100.0), ("cce", 1, 200.0), ("halo", 0, 50.0)]):
        path = tmp_path / f"run{i}" / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(_result(loss, seed, k)))
    text = render(load_results(find_results([tmp_path])), "markdown")
    assert "ECE after TS ↓" in text and "TS temperature (fitted on ID val) " in text
    main, tuned_part = text.split("tuned on validation")[0], text.split("tuned on validation")[1]
    assert "knn[tuned]" not in main  # the defaults are the main tables
    assert "k=150 ± 70.7" in tuned_part and "k=50" in tuned_part
    assert "knn[tuned]" not in tuned_part.split("per OOD set")[1]
