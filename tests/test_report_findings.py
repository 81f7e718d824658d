"""The report a researcher reads first: its findings, counted and adjusted as a direct
computation over its cells says; the forest plot's intervals recomputed from the per-sample
scores; provenance warnings; the baseline check. Synthetic runs whose results are computed
from the scores files beside them (halo_bench.report.synthetic)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from halo_bench.core.errors import HaloBenchError
from halo_bench.report.assemble import build_report
from halo_bench.report.render import render
from halo_bench.report.synthetic import write_bench, write_run
from halo_bench.report.tidy import load_results

multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
# Small runs: 4 detectors, one near and two far sets (the report does not care how many).
SETS = {"near-a": ("near", 200), "far-a": ("far", 200), "far-b": ("far", 150)}
SMALL = {"sets": SETS, "detectors": ("msp", "energy", "knn", "vim"), "n_id": 200}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """CCE, HALO and LogitNorm over 3 seeds, HALO clearly better, LogitNorm close to CCE."""
    folder = tmp_path_factory.mktemp("bench")
    return write_bench(folder, ("cce", "logitnorm"), (0, 1, 2), **SMALL) + [
        write_run(folder, "halo", s, 2.5, **SMALL) for s in (0, 1, 2)]


def _per_seed(results: list[dict], loss: str, pick) -> dict[int, float]:
    return {r["seed"]: pick(r) for r in results if r["loss"]["tag"] == loss}


def test_findings_counts_match_a_direct_computation(bench: list[Path]) -> None:
    results = load_results(bench)
    report = build_report(results, "cce", adjust="bh")
    # The family, from the results files themselves: every ID metric and each detector's near/far
    # mean AUROC and FPR@95, per non-baseline loss; each cell's p the paired t-test over seeds.
    cells = []
    for loss in ("logitnorm", "halo"):
        base = next(r for r in results if r["loss"]["tag"] == "cce")
        picks = [(m, lambda r, m=m: r["id_metrics"][m]) for m in base["id_metrics"]]
        for det in base["ood"]:
            for group in ("near", "far"):
                for metric in ("auroc", "fpr95"):
                    picks.append((f"{det}|{group}|{metric}",
                                  lambda r, d=det, g=group, m=metric: r["ood"][d][g][m]))
        for name, pick in picks:
            a, b = _per_seed(results, loss, pick), _per_seed(results, "cce", pick)
            diffs = np.array([a[s] - b[s] for s in sorted(a)])
            test = stats.ttest_rel([a[s] for s in sorted(a)], [b[s] for s in sorted(a)])
            half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
            cells.append((loss, name, float(test.pvalue), abs(diffs.mean()) > half))
    p = np.array([c[2] for c in cells])
    reject = multipletests(p, alpha=0.05, method="fdr_bh")[0]
    excludes = np.array([c[3] for c in cells])
    found = report.findings
    assert found.tested == len(cells) == 2 * (6 + 4 * 4)  # 6 ID metrics, 4 detectors x near/far x 2
    assert found.unadjusted == int(excludes.sum())
    assert found.survived == int((reject & excludes).sum())
    assert found.expected_by_chance == pytest.approx(0.05 * len(cells))
    # Each reported cell's p is the paired t-test's; survivors are exactly statsmodels' decisions.
    by_sentence = {(c.loss, c.what): c for c in found.findings}
    assert len(by_sentence) == found.unadjusted
    assert 0 < found.survived < found.unadjusted  # the fixture has both kinds
    markdown = render(results, "markdown", baseline="cce")
    summary = markdown.split("## Findings")[1].split("\n\n")[1]
    assert summary == (f"{found.tested} paired differences were tested; {found.unadjusted} exclude zero at the 95% "
                       f"level before adjustment, where about {0.05 * found.tested:.1f} would by chance alone if no "
                       f"loss differed; {found.survived} survive Benjamini-Hochberg (false discovery rate) at 0.05.")
    assert markdown.count("- **") == found.survived
    # Holm is stricter: never more survivors than BH.
    assert build_report(results, "cce", adjust="holm").findings.survived <= found.survived
    # The tables mark survivors ** and the rest that exclude zero *; JSON and CSV carry the decisions.
    cells_text = "\n".join(line for line in markdown.splitlines() if line.startswith("|"))
    assert cells_text.count("]**") >= found.survived
    doc = json.loads(render(results, "json", baseline="cce"))
    assert doc["findings"]["survived"] == found.survived and doc["findings"]["tested"] == found.tested
    rows = pd.DataFrame(doc["rows"])
    assert int(rows["survives"].sum()) == found.survived and int(rows["tested"].sum()) == found.tested
    # every tested cell has its adjusted p (not only those that exclude zero): statsmodels' values
    adjusted = rows[rows["tested"]]["p_adjusted"].to_numpy(float)
    assert np.sort(adjusted) == pytest.approx(np.sort(multipletests(p, alpha=0.05, method="fdr_bh")[1]), abs=1e-9)
    assert len(doc["findings"]["cells"]) == found.tested


def test_forest_interval_is_recomputed_from_the_scores(bench: list[Path]) -> None:
    from halo_bench.report import plots

    results = load_results(bench)
    report = build_report(results, "cce")
    plot = next(p for p in plots.figures(report, render=False) if p.name.endswith("forest-halo"))
    drawn = {key: (delta, lo, hi) for key, delta, lo, hi in plot.data["auroc"]}

    def near_auroc(results_path: Path) -> float:  # from the per-sample scores, with scikit-learn
        scores = pd.read_csv(results_path.with_name("scores.csv.gz"))
        sid = scores[scores["group"] == "id"]["energy"].to_numpy()
        near = [name for name, (group, _) in SETS.items() if group == "near"]
        values = [roc_auc_score(np.r_[np.ones(sid.size), np.zeros((scores["dataset"] == n).sum())],
                                np.r_[sid, scores[scores["dataset"] == n]["energy"].to_numpy()]) for n in near]
        return 100 * float(np.mean(values))

    paths = {(json.loads(p.read_text())["loss"]["tag"], json.loads(p.read_text())["seed"]): p for p in bench}
    diffs = np.array([near_auroc(paths[("halo", s)]) - near_auroc(paths[("cce", s)]) for s in (0, 1, 2)])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    delta, lo, hi = drawn[("energy", "near")]
    assert (delta, lo, hi) == pytest.approx((diffs.mean(), diffs.mean() - half, diffs.mean() + half), abs=1e-9)


def test_mixed_versions_and_seed_sets_are_warned(tmp_path: Path) -> None:
    paths = write_bench(tmp_path, ("cce", "halo"), (0, 1), **SMALL)
    paths.append(write_run(tmp_path, "halo", 2, 2.0, **SMALL, versions={"halo-bench": "0.2.0", "torch": "2.14.1",
                                                                 "timm": "1.0.31", "torchvision": "0.29.1",
                                                                 "device": "cpu", "torch_threads": 2}))
    report = build_report(load_results(paths), "cce")
    warnings = "\n".join(report.provenance.warnings)
    assert "different torch: 2.15.0 (4 runs); 2.14.1 (1 runs)" in warnings
    assert "different torchvision" in warnings
    assert "the losses were run with different seeds (CCE 0,1; HALO 0,1,2)" in warnings
    markdown = render(load_results(paths), "markdown", baseline="cce")
    assert markdown.count("**warning:**") == len(report.provenance.warnings) >= 3
    # the Δ columns pair 2 seeds where HALO's title states 3: every paired cell says so
    deltas = [line.split("|")[-2] for line in markdown.splitlines() if line.startswith("| acc")]
    assert deltas and all("(2 of 3 pairs)" in cell for cell in deltas), deltas
    # The same runs under one version and one seed set: no warning.
    clean = build_report(load_results(paths[:4]), "cce")
    assert clean.provenance.warnings == []


def test_a_baseline_no_run_has_is_an_error(bench: list[Path]) -> None:
    from clirun import cli_fails

    results = load_results(bench)
    with pytest.raises(HaloBenchError, match=r"--baseline 'nonsense' matches no run in the report; the losses found "
                                             r"are: cce \(CCE\), logitnorm \(LOGITNORM\), halo \(HALO\)"):
        build_report(results, "nonsense")
    cli_fails("report", bench[0].parent.parent, "--baseline", "nonsense", match="matches no run")
    cli_fails("report", bench[0].parent.parent, "--adjust", "bonferroni", match="unknown multiple-comparisons")
    only_halo = [p for p in bench if "halo" in p.parent.name]
    with pytest.raises(HaloBenchError, match="the default baseline 'cce' matches no run"):
        build_report(load_results(only_halo + [bench[3]]), None)
    # One loss needs no baseline: a report without Δ columns and nothing to test.
    single = build_report(load_results(only_halo), None)
    assert single.findings.tested == 0 and not any("Δ" in h for _, header, _ in single.tables for h in header)


def test_intervals_past_a_metrics_range_are_clipped_and_marked(tmp_path: Path) -> None:
    from halo_bench.report.deltas import compute_deltas
    from halo_bench.report.tidy import tidy

    paths = write_bench(tmp_path, ("cce", "halo"), (0, 1), **SMALL)
    docs = [json.loads(p.read_text()) for p in paths]
    for doc, fpr in zip(docs, (0.0, 100.0, 100.0, 0.0), strict=True):  # Δ FPR@95 of +100 then -100
        doc["ood"]["msp"]["far"]["fpr95"] = fpr
    for p, doc in zip(paths, docs, strict=True):
        p.write_text(json.dumps(doc))
    deltas = compute_deltas(tidy(load_results(paths)), "cce")
    row = deltas[(deltas.detector == "msp") & (deltas.dataset == "far mean") & (deltas.metric == "fpr95")].iloc[0]
    assert row["delta"] == 0.0 and (row["delta_lo"], row["delta_hi"]) == (-100.0, 100.0) and row["clipped"]
    line = next(line for line in render(load_results(paths), "markdown").splitlines()
                if line.startswith("| msp") and "(clipped)" in line)
    assert re.search(r"\+0\.00 \[-100\.00, \+100\.00\] \(clipped\)", line)


@pytest.mark.parametrize(("centre", "spread"), [(3.0, 1.5), (20.0, 20.0)])
def test_score_panels_share_a_range_unless_a_loss_would_pile_into_a_few_bins(centre: float, spread: float) -> None:
    """One range per detector for every loss, unless one loss's central 99% would span under a
    quarter of it: then one panel per loss, each on that loss's own 0.5-99.5% quantiles."""
    from halo_bench.report.plots import COMPARABLE_SPAN, distribution_panels

    rng = np.random.default_rng(int(spread))
    scores = {("energy", "cce"): {"id": rng.normal(2, 1, 400), "far": rng.normal(0, 1, 300)},
              ("energy", "halo"): {"id": rng.normal(centre, spread, 400), "far": rng.normal(0, spread, 300)}}
    panels = distribution_panels(scores, ["energy"], ["cce", "halo"])

    def central(*arrays: np.ndarray) -> tuple[float, float]:
        return tuple(np.quantile(np.concatenate(arrays), [0.005, 0.995]))

    own = {loss: central(*scores[("energy", loss)].values()) for loss in ("cce", "halo")}
    shared = central(*scores[("energy", "cce")].values(), *scores[("energy", "halo")].values())
    narrowest = min(hi - lo for lo, hi in own.values()) / (shared[1] - shared[0])
    if narrowest >= COMPARABLE_SPAN:
        assert spread == 1.5  # the two losses' scores overlap enough to share an axis
        assert [(d, losses, own_range) for d, losses, _, own_range in panels] == [("energy", ["cce", "halo"], False)]
        assert panels[0][2] == pytest.approx(shared)
    else:
        assert spread == 20.0
        assert [(d, losses, own_range) for d, losses, _, own_range in panels] == [
            ("energy", ["cce"], True), ("energy", ["halo"], True)]
        assert panels[0][2] == pytest.approx(own["cce"]) and panels[1][2] == pytest.approx(own["halo"])


def test_one_shared_seed_says_its_intervals_are_bootstraps_and_every_tested_cell_is_flagged(tmp_path: Path) -> None:
    paths = write_bench(tmp_path, ("cce",), (0,), **SMALL) + [write_run(tmp_path, "halo", 0, 2.5, **SMALL)]
    results = load_results(paths)
    found = build_report(results, "cce").findings
    assert found.tested > 0 and found.bootstrapped == found.tested == len(found.cells)
    assert all(c.interval == "bootstrap over samples" for c in found.cells)
    findings = render(results, "markdown", baseline="cce").split("## Findings")[1].split("## How")[0]
    assert f"{found.tested} of the {found.tested} cells rest on one seed shared with the baseline" in findings
    from html import escape

    from halo_bench.report.html import render_html

    page = render_html(build_report(results, "cce"), [])  # the page says the same, without figures
    assert escape(found.bootstrap_note()) in page
    assert escape(found.no_survivor_note()) in page or "survive the adjustment:" in page
    assert "rest on one seed shared with the baseline" in render(results, "latex", baseline="cce")  # its caption
    rows = pd.read_csv(io.StringIO(render(results, "csv", baseline="cce")))
    tested = rows[rows["tested"]]
    assert len(tested) == found.tested and tested["p"].notna().all() and tested["p_adjusted"].notna().all()
    # ID cells the bootstrap gives no p-value (NLL, Brier, ...) are shown but not counted as tested
    untested = rows[(rows["group"] == "id") & ~rows["tested"] & rows["delta"].notna() & (rows["loss"] == "halo")]
    assert len(untested) > 0 and untested["p"].isna().all()


@pytest.mark.parametrize("seed", range(5))
def test_the_no_survivor_wording_follows_a_binomial_tail(seed: int) -> None:
    """'More than chance' exactly where P(X >= unadjusted) < alpha for X ~ Bin(tested, alpha)."""
    from halo_bench.report.findings import Findings

    rng = np.random.default_rng(seed)
    for _ in range(40):
        tested = int(rng.integers(1, 300))
        unadjusted = int(rng.integers(0, min(tested, 40) + 1))
        found = Findings("bh", 0.05, tested, unadjusted, 0, [])
        expected = unadjusted > 0 and stats.binom.sf(unadjusted - 1, tested, 0.05) < 0.05
        assert found.more_than_chance == expected, (tested, unadjusted)


def test_runs_evaluated_at_different_commits_are_warned(tmp_path: Path) -> None:
    versions = {"halo-bench": "0.2.0", "torch": "2.15.0", "timm": "1.0.31", "torchvision": "0.29.2",
                "device": "cpu", "torch_threads": 2}
    paths = [write_run(tmp_path, loss, 0, 1.0, **SMALL, versions={**versions, "halo-bench commit": commit})
             for loss, commit in (("cce", "abc123"), ("halo", "def456+dirty"))]
    report = build_report(load_results(paths), "cce")
    assert dict(report.provenance.lines)["evaluated with halo-bench"] == (
        "0.2.0, commit abc123 (1 runs); 0.2.0, commit def456+dirty (1 runs)")
    assert any("different evaluated with halo-bench" in w for w in report.provenance.warnings)


def test_runs_of_one_name_in_two_folders_are_two_runs_for_the_detector_warning(tmp_path: Path) -> None:
    """Run names repeat across --out folders: a detector one of them lacks is still warned about."""
    small = {k: v for k, v in SMALL.items() if k != "detectors"}
    paths = [write_run(tmp_path / "a", "cce", 0, 1.0, detectors=("msp", "energy", "knn"), **small),
             write_run(tmp_path / "b", "cce", 0, 1.0, detectors=("msp",), **small)]
    assert paths[0].parent.name == paths[1].parent.name
    warnings = build_report(load_results(paths), "cce").provenance.warnings
    assert any("energy, knn were evaluated on some runs only" in w for w in warnings), warnings
