"""Report aggregation on synthetic results with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from halo_bench.errors import HaloBenchError
from halo_bench.evaluate import RESULTS_SCHEMA
from halo_bench.report import aggregate, find_results, load_results, render, tidy


def _result(loss: str, seed: int, acc: float, auroc_far: float, created: str = "2026-01-01") -> dict:
    sets = {"noise": {"group": "far", "auroc": auroc_far, "fpr95": 100 - auroc_far}}
    ood = {"energy": {"sets": sets, "far": {"auroc": auroc_far, "fpr95": 100 - auroc_far}}}
    if loss == "halo":
        ood["halo_abstain"] = ood["energy"]
    return {
        "schema": RESULTS_SCHEMA, "created": created, "run": f"{loss}-{seed}", "suite": "digits",
        "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "checkpoint": {"sha256": "0" * 64}, "id_metrics": {"acc": acc, "ece": acc / 1000}, "ood": ood,
    }


def _write(tmp_path: Path, docs: list[dict]) -> list[Path]:
    paths = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"run{i}" / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(doc))
        paths.append(path)
    return paths


def test_mean_std_and_delta_over_seeds(tmp_path: Path) -> None:
    accs = {"cce": [90.0, 92.0, 97.0], "halo": [95.0, 96.0, 94.0]}
    docs = [_result(loss, s, accs[loss][s], 80 + s + (10 if loss == "halo" else 0))
            for loss in accs for s in range(3)]
    _write(tmp_path, docs)
    results = load_results(find_results([tmp_path]))
    agg = aggregate(tidy(results))
    row = agg[(agg.metric == "acc") & (agg.loss == "cce")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(accs["cce"]))
    assert row["std"] == pytest.approx(np.std(accs["cce"], ddof=1))
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    markdown = render(results, "markdown")
    assert f"{np.mean(accs['cce']):.2f} ± {np.std(accs['cce'], ddof=1):.2f}" in markdown
    assert "+10.00" in markdown  # far AUROC delta HALO - CCE
    assert "| halo_abstain" in markdown and "–" in markdown  # HALO-only detector: no CCE value


def test_newest_evaluation_of_a_run_wins(tmp_path: Path) -> None:
    docs = [_result("cce", 0, 50.0, 70.0, "2026-01-01"), _result("cce", 0, 60.0, 70.0, "2026-02-01")]
    agg = aggregate(tidy(load_results(_write(tmp_path, docs))))
    assert agg[agg.metric == "acc"]["mean"].tolist() == [60.0]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(HaloBenchError, match="no results.json"):
        find_results([tmp_path])
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(HaloBenchError, match="not a readable results file"):
        load_results([bad])
    bad.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(HaloBenchError, match="not a halo-bench results file"):
        load_results([bad])
