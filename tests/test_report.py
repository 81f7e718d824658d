"""Report aggregation on synthetic results with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from halo_bench.core.errors import HaloBenchError
from halo_bench.report.render import render
from halo_bench.report.tidy import aggregate, find_results, load_results, tidy
from halo_bench.results import RESULTS_SCHEMA


def _result(loss: str, seed: int, acc: float, auroc_far: float, created: str = "2026-01-01",
            epochs: int = 10) -> dict:
    sets = {"noise": {"group": "far", "auroc": auroc_far, "fpr95": 100 - auroc_far}}
    ood = {"energy": {"sets": sets, "far": {"auroc": auroc_far, "fpr95": 100 - auroc_far}}}
    if loss == "halo":
        ood["halo_abstain"] = ood["energy"]
    return {
        "schema": RESULTS_SCHEMA, "schema_version": 1, "created": created, "run": f"{loss}-{seed}",
        "suite": "digits", "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "loss": {"name": loss, "tag": loss, "label": loss.upper(), "knobs": {}, "changed": {}},
        "checkpoint": {"sha256": "0" * 64, "complete": True, "epochs": epochs}, "id_metrics": {"acc": acc, "ece": acc / 1000}, "ood": ood,
        "train_config": {"epochs": epochs, "lr": 0.05, "seed": seed, "loss": loss, "device": "cpu"},
        "datasets": {"digits": {"group": "id"}, "noise": {"group": "far"}},
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


def test_runs_of_different_recipes_are_not_averaged(tmp_path: Path) -> None:
    docs = [_result("cce", 0, 90.0, 80.0, epochs=100), _result("cce", 1, 50.0, 60.0, epochs=2),
            _result("halo", 0, 91.0, 85.0, epochs=100)]
    table = tidy(load_results(_write(tmp_path, docs)))
    assert set(table["model"]) == {"resnet18 [epochs=100]", "resnet18 [epochs=2]"}
    agg = aggregate(table)
    acc = agg[(agg.metric == "acc") & (agg.loss == "cce")].set_index("model")["mean"]
    assert acc["resnet18 [epochs=100]"] == 90.0 and acc["resnet18 [epochs=2]"] == 50.0


def test_loss_variants_get_their_own_labelled_columns(tmp_path: Path) -> None:
    doc = _result("halo", 0, 91.0, 85.0)
    doc["loss"].update(tag="halo+ls0.2", label="HALO label_smoothing=0.2", changed={"label_smoothing": 0.2})
    table = tidy(load_results(_write(tmp_path, [_result("cce", 0, 90.0, 80.0), doc])))
    assert set(table["loss"]) == {"cce", "halo+ls0.2"}
    markdown = render(load_results(find_results([tmp_path])), "markdown")
    assert "HALO label_smoothing=0.2" in markdown and "Δ HALO label_smoothing=0.2−CCE" in markdown


def test_dropped_evaluations_are_reported(tmp_path: Path) -> None:
    """Evaluations of an earlier checkpoint of a run (retrained since) are left out, and said so."""
    docs = [_result("cce", 0, 50.0, 70.0, "2026-01-01"), _result("cce", 0, 60.0, 70.0, "2026-02-01")]
    docs[0]["checkpoint"]["sha256"] = "1" * 64
    assert "1 evaluation(s) of earlier checkpoints" in render(load_results(_write(tmp_path, docs)), "markdown")


def test_published_numbers_appear_for_cifar_suites_only(tmp_path: Path) -> None:
    from halo_bench.report.tables import published_tables

    titles = [title for title, _, _ in published_tables("cifar10-openood")]
    assert len(titles) == 3 and "HALO write-up" in titles[0] and "OpenOOD v1.5" in titles[1]
    assert "LogitNorm" in titles[2]
    rows = {row[0]: row[1:] for row in published_tables("cifar100")[0][2]}
    assert rows["svhn FPR@95"] == ["81.00", "63.70"] and rows["ECE"] == ["0.1102", "0.0283"]
    assert published_tables("digits") == []
    doc = _result("cce", 0, 90.0, 80.0)
    doc["suite"] = "cifar10"
    assert "published, HALO write-up" in render(load_results(_write(tmp_path, [doc])), "markdown")


def test_logitnorm_reference_numbers_are_published(tmp_path: Path) -> None:
    from halo_bench.report.tables import published_tables

    rows = {title: rows for title, _, rows in published_tables("cifar10")}
    logitnorm = [r for title, rs in rows.items() if "LogitNorm" in title for r in rs]
    assert logitnorm == [["msp AUROC near / far", "92.33 / 96.74"]]
    assert any(r == ["msp AUROC near / far", "78.47 / 81.53"] for _, _, rs in published_tables("cifar100")
               for r in rs)


def test_report_runs_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    import subprocess
    import sys

    _write(tmp_path, [_result("cce", 0, 90.0, 80.0), _result("halo", 0, 91.0, 85.0)])
    from blocktorch import PRELUDE

    code = (PRELUDE + f"sys.argv = ['halo-bench', 'report', {str(tmp_path)!r}, '--format', 'markdown']\n"
            "from halo_bench.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Δ HALO−CCE" in proc.stdout and "+1.00" in proc.stdout  # acc 91 - 90


def test_three_losses_get_a_delta_each_against_the_baseline(tmp_path: Path) -> None:
    docs = [_result("cce", 0, 90.0, 80.0), _result("halo", 0, 91.0, 85.0), _result("logitnorm", 0, 92.5, 70.0)]
    markdown = render(load_results(_write(tmp_path, docs)), "markdown")
    assert "Δ HALO−CCE" in markdown and "Δ LOGITNORM−CCE" in markdown
    line = next(row for row in markdown.splitlines() if row.startswith("| acc"))
    assert "+1.00" in line and "+2.50" in line
    other = render(load_results(find_results([tmp_path])), "markdown", baseline="halo")
    assert "Δ CCE−HALO" in other and "Δ LOGITNORM−HALO" in other


def test_paired_interval_matches_scipy_t_interval_on_random_runs(tmp_path: Path) -> None:
    from scipy import stats

    from halo_bench.report.deltas import paired_differences

    rng = np.random.default_rng(7)
    seeds = [0, 1, 2, 3, 4]
    base_acc, halo_acc = rng.uniform(80, 90, 5), rng.uniform(80, 90, 5)
    docs = [_result("cce", s, float(a), 80.0) for s, a in zip(seeds, base_acc, strict=True)]
    docs += [_result("halo", s, float(a), 85.0) for s, a in zip(seeds, halo_acc, strict=True)]
    docs.append(_result("halo", 9, 99.0, 85.0))  # a seed without a CCE partner is not paired
    table = tidy(load_results(_write(tmp_path, docs)))
    row = paired_differences(table, "cce").set_index(["metric", "loss"]).loc[("acc", "halo")]
    diffs = halo_acc - base_acc
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert row["pairs"] == 5 and row["delta"] == pytest.approx(diffs.mean())
    assert (row["delta_lo"], row["delta_hi"]) == pytest.approx((lo, hi))
    markdown = render(load_results(find_results([tmp_path])), "markdown")
    cell = f"{diffs.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]" + ("*" if lo > 0 or hi < 0 else "")
    assert cell in markdown
    far = next(line for line in markdown.splitlines() if line.startswith("| energy"))
    assert "+5.00 [+5.00, +5.00]*" in far  # AUROC 85 vs 80 on every seed: excludes 0
