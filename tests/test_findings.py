"""The multiple-comparisons control behind a report's findings, against statsmodels and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from halo_bench.report.findings import (
    Finding,
    adjust,
    bootstrap_p,
    clip_interval,
    collect,
    t_test_p,
)

multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests


@pytest.mark.parametrize(("method", "theirs"), [("bh", "fdr_bh"), ("holm", "holm")])
@pytest.mark.parametrize("seed", range(6))
def test_adjusted_decisions_match_statsmodels(method: str, theirs: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 120))
    # a mixture: true nulls (uniform) and real effects (small p), with ties
    p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m))
    p[rng.integers(0, m, m // 10)] = p[0]
    reject, adjusted = adjust(p, method)
    want_reject, want_adjusted, _, _ = multipletests(p, alpha=0.05, method=theirs)
    np.testing.assert_array_equal(reject, want_reject)
    np.testing.assert_allclose(adjusted, want_adjusted, rtol=1e-12)


def test_nan_p_values_are_outside_the_family() -> None:
    p = np.array([0.001, math.nan, 0.04, 0.03])
    reject, adjusted = adjust(p, "bh")
    want_reject, want_adjusted, _, _ = multipletests(p[[0, 2, 3]], method="fdr_bh")
    assert list(reject) == [want_reject[0], False, want_reject[1], want_reject[2]]
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(want_adjusted[0])
    assert list(adjust(p, "none")[0]) == [True, False, True, True]


@pytest.mark.parametrize("seed", range(5))
def test_t_test_p_matches_scipy_and_the_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    diffs = rng.normal(0.5 * seed, 1.0, int(rng.integers(2, 10)))
    assert t_test_p(diffs) == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-10)
    # p < 0.05 exactly when the 95% t interval excludes zero
    half = stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert (t_test_p(diffs) < 0.05) == (abs(diffs.mean()) > half)
    assert math.isnan(t_test_p(diffs[:1]))
    assert t_test_p(np.array([2.0, 2.0])) == 0.0 and t_test_p(np.zeros(3)) == 1.0


def test_bootstrap_p() -> None:
    assert bootstrap_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * 1 / 4)
    draws = np.random.default_rng(0).normal(0.0, 1.0, 9999)
    assert 0.8 < bootstrap_p(draws) <= 1.0


def test_clip_interval() -> None:
    assert clip_interval("fpr95", -126.13, 113.68) == (-100.0, 100.0, True)
    assert clip_interval("ece", -0.01, 0.02) == (-0.01, 0.02, False)
    assert clip_interval("nll", -50.0, 50.0) == (-50.0, 50.0, False)  # unbounded metric


def _cell(p: float, lo: float, hi: float, better: bool | None = True) -> Finding:
    return Finding("halo", "cce", "near-OOD MSP AUROC", "auroc", (lo + hi) / 2, lo, hi, p, math.nan, False, better)


def test_collect_counts_and_sentences() -> None:
    rng = np.random.default_rng(1)
    cells = []
    for _ in range(60):  # 60 cells: 6 real effects, the rest noise
        p = float(rng.random())
        cells.append(_cell(p, 0.5, 1.0) if p < 0.05 else _cell(p, -1.0, 1.0))
    cells += [_cell(1e-6, 2.0, 3.0) for _ in range(6)]
    found = collect(cells, "bh")
    raw = np.array([c.p for c in cells])
    want_reject = multipletests(raw, method="fdr_bh")[0]
    excludes = np.array([c.lo > 0 or c.hi < 0 for c in cells])
    assert found.tested == 66 and found.unadjusted == int(excludes.sum())
    assert found.survived == int((want_reject & excludes).sum())
    assert found.expected_by_chance == pytest.approx(0.05 * 66)
    assert [c.survives for c in found.findings] == sorted((c.survives for c in found.findings), reverse=True)
    assert "66 paired differences were tested" in found.summary() and "Benjamini-Hochberg" in found.summary()
    worse = _cell(0.001, -6.24, -1.12, better=False)
    worse.delta = -3.68
    assert worse.sentence({"halo": "HALO", "cce": "CCE"}) == \
        "HALO worse than CCE on near-OOD MSP AUROC: -3.68 [-6.24, -1.12]"
