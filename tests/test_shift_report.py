"""report/shift.py on synthetic results with known numbers: the shift tables (mean over
corruptions per run, mean ± std over seeds, paired Δ with its t interval against scipy's own),
the choice among several shift evaluations of a run, and the figures (what they draw, labelled
axes, no overlapping text)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from halo_bench.report.shift import shift_figures, shift_tables
from halo_bench.results import RESULTS_SCHEMA

CORRUPTIONS = ("gaussian_noise", "contrast")


def _acc(loss: str, seed: int, corruption: str, severity: int) -> float:
    return 95.0 - 8 * severity - (5 if corruption == "contrast" else 0) + (3 if loss == "halo" else 0) + seed ** 2


def _ece(loss: str, seed: int, corruption: str, severity: int) -> float:
    return 0.02 * severity + (0.01 if loss == "cce" else 0.0) + 0.003 * seed + (0.005 if corruption == "contrast"
                                                                                 else 0.0)


def _split(loss: str, seed: int, corruption: str, severity: int) -> dict:
    auroc = 90.0 - 2 * severity + seed
    return {"dataset": f"cifar-c-style/{corruption}/{severity}", "n": 100,
            "id_metrics": {"acc": _acc(loss, seed, corruption, severity), "ece": _ece(loss, seed, corruption, severity)},
            "rejection": {"msp": 5.0 + 4 * severity + seed},
            "fsood": {"msp": {"sets": {"noise": {"group": "far", "auroc": auroc, "fpr95": 100 - auroc}},
                              "far": {"auroc": auroc, "fpr95": 100 - auroc}}}}


def _doc(loss: str, seed: int, created: str = "2026-01-01", corruptions=CORRUPTIONS) -> dict:
    splits = {c: {str(s): _split(loss, seed, c, s) for s in range(1, 6)} for c in corruptions}
    return {
        "schema": RESULTS_SCHEMA, "schema_version": 2, "created": created, "run": f"{loss}-{seed}", "suite": "digits",
        "id_dataset": "digits", "seed": seed, "model": {"name": "resnet18", "loss": loss},
        "loss": {"name": loss, "tag": loss, "label": loss.upper()},
        "checkpoint": {"sha256": f"{loss}{seed}", "complete": True}, "id_metrics": {"acc": 95.0 + seed},
        "ood": {"msp": {"sets": {"noise": {"group": "far", "auroc": 91.0, "fpr95": 9.0}},
                        "far": {"auroc": 91.0 + seed, "fpr95": 9.0}}},
        "shift": {"dataset": "cifar-c-style", "corruptions": list(corruptions), "severities": [1, 2, 3, 4, 5],
                  "detectors": ["msp"], "splits": splits,
                  "clean": {"id_metrics": {"acc": 95.0 + seed, "ece": 0.01 + seed / 1000}, "rejection": {"msp": 5.0}}},
    }


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return [_doc(loss, seed) for loss, seed in itertools.product(("cce", "halo"), (0, 1, 2))]


def _table(tables, ending: str):
    (found,) = [t for t in tables if t[0].endswith(ending)]
    return found


def _row(rows, *first):
    (found,) = [r for r in rows if tuple(r[: len(first)]) == first]
    return found


def test_id_table_means_over_corruptions_then_seeds_with_paired_t_intervals(results) -> None:
    from scipy import stats

    tables = shift_tables(results, baseline="cce")
    title, header, rows = _table(tables, "ID metrics by severity")
    assert "mean over 2 corruptions" in title and "CCE 3 seeds 0,1,2" in title
    assert header == ["metric", "severity", "CCE", "HALO", "Δ HALO−CCE"]
    per_run = {loss: [np.mean([_acc(loss, s, c, 3) for c in CORRUPTIONS]) for s in (0, 1, 2)] for loss in ("cce", "halo")}
    row = _row(rows, "acc (%) ↑", "3")
    cce = per_run["cce"]
    assert row[2] == f"{np.mean(cce):.2f} ± {np.std(cce, ddof=1):.2f}"
    diffs = np.subtract(per_run["halo"], per_run["cce"])  # +3 each seed: no spread, a zero-width interval
    assert row[4] == f"{diffs.mean():+.2f} [{diffs.mean():+.2f}, {diffs.mean():+.2f}]*"
    # ECE: per-seed differences that vary, against scipy's paired t interval
    def ece_run(loss: str, seed: int) -> float:
        return np.mean([_ece(loss, seed, c, s) for c in CORRUPTIONS for s in range(1, 6)])

    ece_diffs = {}
    for loss in ("cce", "halo"):
        ece_diffs[loss] = [ece_run(loss, s) + (0.004 * s * s if loss == "halo" else 0) for s in (0, 1, 2)]
    varied = copy.deepcopy(results)
    for doc in varied:
        if doc["loss"]["tag"] == "halo":
            for by in doc["shift"]["splits"].values():
                for split in by.values():
                    split["id_metrics"]["ece"] += 0.004 * doc["seed"] ** 2
    _, _, rows = _table(shift_tables(varied, baseline="cce"), "ID metrics by severity")
    ci = stats.ttest_rel(ece_diffs["halo"], ece_diffs["cce"]).confidence_interval(0.95)
    delta = np.mean(np.subtract(ece_diffs["halo"], ece_diffs["cce"]))
    assert _row(rows, "ECE ↓", "1-5 (mean)")[4] == f"{delta:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]" + (
        "*" if ci.low > 0 or ci.high < 0 else "")
    assert _row(rows, "acc (%) ↑", "0 (clean)")[2] == "96.00 ± 1.00"  # the clean ID test set: 95 + seed


def test_ood_rejection_and_per_corruption_tables(results) -> None:
    tables = shift_tables(results, baseline="cce")
    _, header, rows = _table(tables, "full-spectrum AUROC (%) ↑, near / far means")
    assert header[:2] == ["detector", "severity"] and "far CCE" in header
    far = header.index("far CCE")
    assert _row(rows, "msp", "4")[far] == f"{np.mean([82, 83, 84]):.2f} ± 1.00"
    assert _row(rows, "msp", "0 (clean)")[far] == "92.00 ± 1.00"  # the clean OOD evaluation's far mean
    _, header, rows = _table(tables, "rejected at the clean 95%-TPR threshold (%) ↓")
    assert _row(rows, "msp", "2")[2] == f"{np.mean([13, 14, 15]):.2f} ± 1.00"
    _, header, rows = _table(tables, "per corruption, mean over severities")
    assert header == ["corruption", "acc CCE", "acc HALO", "ECE CCE", "ECE HALO"]
    contrast = [np.mean([_acc("cce", s, "contrast", v) for v in range(1, 6)]) for s in (0, 1, 2)]
    assert _row(rows, "contrast")[1] == f"{np.mean(contrast):.2f} ± {np.std(contrast, ddof=1):.2f}"


def test_a_delta_interval_past_the_metrics_range_is_clipped_and_marked(results) -> None:
    """Full-spectrum FPR@95 differences that vary wildly over seeds: the t interval runs past -100
    points, the most FPR@95 can fall; the table cuts it there and says so."""
    from scipy import stats

    halo_fpr = {0: 5.0, 1: 95.0, 2: 10.0}
    varied = copy.deepcopy(results)
    for doc in varied:
        if doc["loss"]["tag"] == "halo":
            for by in doc["shift"]["splits"].values():
                for split in by.values():
                    split["fsood"]["msp"]["far"]["fpr95"] = halo_fpr[doc["seed"]]
    cce = [np.mean([100 - (90.0 - 2 * v + s) for _ in CORRUPTIONS for v in range(1, 6)]) for s in (0, 1, 2)]
    diffs = np.subtract([halo_fpr[s] for s in (0, 1, 2)], cce)
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert ci.low < -100 < ci.high  # the case this test is about
    tables = shift_tables(varied, baseline="cce")
    _, header, rows = _table(tables, "full-spectrum FPR@95 (%), ID positive ↓, near / far means")
    cell = _row(rows, "msp", "1-5 (mean)")[header.index("far Δ HALO−CCE")]
    assert cell == f"{diffs.mean():+.2f} [{max(ci.low, -100):+.2f}, {min(ci.high, 100):+.2f}] (clipped)"


def test_results_without_shift_give_nothing_and_the_largest_evaluation_counts(results) -> None:
    plain = [{k: v for k, v in doc.items() if k != "shift"} for doc in results]
    assert shift_tables(plain) == [] and shift_figures(plain) == []
    # a newer evaluation of one corruption does not replace the full one of the same checkpoint
    newer = _doc("cce", 0, created="2026-02-01", corruptions=("contrast",))
    for by in newer["shift"]["splits"].values():
        for split in by.values():
            split["id_metrics"]["acc"] = -1.0
    title, _, rows = _table(shift_tables([*results, newer]), "ID metrics by severity")
    assert "mean over 2 corruptions" in title and "-1.00" not in str(rows)
    partial = {**_doc("halo", 3), "partial": {"limit": 10}}
    title, _, _ = _table(shift_tables([*results, partial]), "ID metrics by severity")
    assert "HALO 3 seeds 0,1,2" in title


def _overlaps(figure) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts (titles, axis labels, tick labels, legends) anywhere in the
    figure whose drawn boxes overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    for i, ax in enumerate(a for a in figure.axes if a.get_visible()):
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]
        boxes += [(f"{i}:{t.get_text()}", t.get_window_extent(renderer)) for t in texts
                  if t.get_visible() and t.get_text()]
        if ax.get_legend() is not None:
            boxes.append((f"{i}:legend", ax.get_legend().get_window_extent(renderer)))
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_figures_draw_the_numbers_with_labelled_axes_and_no_overlaps(results) -> None:
    plots = shift_figures(results, baseline="cce")
    names = [p.name for p in plots]
    assert names == ["digits-resnet18-cifar-c-style-shift-acc-ece", "digits-resnet18-cifar-c-style-shift-rejection",
                     "digits-resnet18-cifar-c-style-shift-auroc"]
    boxes = plots[0].data
    expected = [np.mean([_acc("halo", s, c, 2) for s in (0, 1, 2)]) for c in CORRUPTIONS]
    assert sorted(boxes["acc|halo"][2]) == pytest.approx(sorted(expected))
    assert boxes["ece|cce"][0] == pytest.approx([np.mean([0.01, 0.011, 0.012])])
    assert plots[1].data["msp|cce"][3] == pytest.approx(np.mean([17, 18, 19]))
    for plot in plots:
        for ax in plot.figure.axes:
            if ax.get_visible():
                assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert _overlaps(plot.figure) == [], plot.name
        assert b"<svg" in plot.svg()[:2000]
    # the check itself sees a clash: two long tick labels on top of each other
    from matplotlib.figure import Figure

    crowded = Figure(figsize=(2, 2))
    crowded.subplots().set_xticks([0, 0.01], ["a long tick label", "another long one"])
    assert _overlaps(crowded)
