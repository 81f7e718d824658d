"""What a report may claim: the paired differences that survive a multiple-comparisons control.

A report tests many cells (every metric and detector, near and far, for every loss
against the baseline); at a 5% level, about one in twenty would exclude zero by chance
alone. The family is fixed by `family_mask`: the Δ cells of the ID table and of the
near/far-mean OOD tables (per-set cells are shown, not tested). Each cell's p-value is
the two-sided paired t-test over seeds (the test behind its t interval) or, for a single
shared seed, the bootstrap over test samples. `adjust` applies Benjamini-Hochberg (false
discovery rate, the default) or Holm (family-wise error rate) over the family
(docs/protocol.md, "Findings"). No pandas at import; numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import ADJUSTMENTS

ADJUSTMENT_NAMES = {"bh": "Benjamini-Hochberg (false discovery rate)", "holm": "Holm (family-wise error rate)",
                    "none": "no adjustment"}
ALPHA = 0.05
# Largest possible |Δ| of a metric: an interval past it is clipped there and marked.
DELTA_RANGE = {"acc": 100.0, "abstain_rate": 100.0, "auroc": 100.0, "fpr95": 100.0, "fpr95_openood": 100.0,
               "aupr_in": 100.0, "aupr_out": 100.0, "rejection": 100.0, "ece": 1.0, "aece": 1.0, "ts_ece": 1.0,
               "ts_aece": 1.0, "aurc": 1.0, "ts_aurc": 1.0, "brier": 2.0, "ts_brier": 2.0}


def t_test_p(diffs: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test that the mean of `diffs` is 0 (NaN below two
    pairs). Zero spread: 0 when the mean differs from 0, else 1, as the interval says."""
    diffs = np.asarray(diffs, dtype=float)
    n = diffs.size
    if n < 2:
        return math.nan
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean != 0.0 else 1.0
    from scipy.special import stdtr

    t = mean / (sd / math.sqrt(n))
    return float(2.0 * stdtr(n - 1, -abs(t)))


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference' from resampled differences: twice the
    smaller tail beyond 0, counting the observed resampling as one draw (never exactly 0)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return math.nan
    below = (np.sum(draws <= 0.0) + 1) / (draws.size + 1)
    above = (np.sum(draws >= 0.0) + 1) / (draws.size + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def adjust(p: np.ndarray, method: str = "bh", alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(reject, adjusted p) for the p-values of one family; NaN p-values are not in the family
    (reject False, adjusted NaN). `bh`: Benjamini-Hochberg step-up; `holm`: Holm step-down;
    `none`: the raw p-values against `alpha`."""
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {method!r}; one of {', '.join(ADJUSTMENTS)}")
    p = np.asarray(p, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    if m:
        values = p[tested]
        order = np.argsort(values, kind="stable")
        ranked = values[order]
        if method == "bh":
            scaled = ranked * m / np.arange(1, m + 1)
            out = np.minimum.accumulate(scaled[::-1])[::-1]
        elif method == "holm":
            out = np.maximum.accumulate(ranked * (m - np.arange(m)))
        else:
            out = ranked
        result = np.empty(m)
        result[order] = np.minimum(out, 1.0)
        adjusted[tested] = result
    reject = np.zeros(p.shape, dtype=bool)
    reject[tested] = adjusted[tested] <= alpha
    return reject, adjusted


def clip_interval(metric: str, lo: float, hi: float) -> tuple[float, float, bool]:
    """The interval cut to the metric's possible range of differences; True when it was cut."""
    bound = DELTA_RANGE.get(metric)
    if bound is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return lo, hi, False
    new_lo, new_hi = max(lo, -bound), min(hi, bound)
    return new_lo, new_hi, (new_lo, new_hi) != (lo, hi)


@dataclass
class Finding:
    """One tested cell: `loss` against `baseline` on `what` (words), its Δ, interval and p."""

    loss: str
    baseline: str
    what: str
    metric: str
    delta: float
    lo: float
    hi: float
    p: float
    p_adjusted: float
    survives: bool
    better: bool | None  # None: the metric has no better direction (the fitted temperature)
    decimals: int = 2
    keys: dict[str, Any] = field(default_factory=dict)
    interval: str = "t over seeds"  # or "bootstrap over samples" (one shared seed; deltas.with_bootstrap)

    @property
    def key(self) -> tuple:
        """(suite, model, detector, dataset, group, metric, loss): the cell in the report's tables."""
        k = self.keys
        return (k["suite"], k["model"], k["detector"], k["dataset"], k["group"], self.metric, self.loss)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)

    def sentence(self, labels: dict[str, str]) -> str:
        """E.g. 'HALO worse than CCE on near-OOD MSP AUROC: -3.68 [-6.24, -1.12]'."""
        name, base = labels.get(self.loss, self.loss), labels.get(self.baseline, self.baseline)
        verdict = ("higher" if self.delta > 0 else "lower") if self.better is None else (
            "better" if self.better else "worse")
        d = self.decimals
        return (f"{name} {verdict} than {base} on {self.what}: {self.delta:+.{d}f} "
                f"[{self.lo:+.{d}f}, {self.hi:+.{d}f}]")


@dataclass
class Findings:
    """The family's counts and the cells that exclude zero (survivors first)."""

    method: str
    alpha: float
    tested: int
    unadjusted: int
    survived: int
    findings: list[Finding]  # the cells that exclude zero, survivors first
    cells: list[Finding] = field(default_factory=list)  # every tested cell (finite p), in the family's order

    @property
    def expected_by_chance(self) -> float:
        """How many of the tested cells would exclude zero at `alpha` if no loss differed."""
        return self.alpha * self.tested

    def summary(self) -> str:
        method = ADJUSTMENT_NAMES[self.method]
        return (f"{self.tested} paired differences were tested; {self.unadjusted} exclude zero at the "
                f"{100 * (1 - self.alpha):.0f}% level before adjustment, where about "
                f"{self.expected_by_chance:.1f} would by chance alone if no loss differed; {self.survived} "
                f"survive {method} at {self.alpha:g}.")

    def blocks(self, labels: dict[str, str]) -> list[tuple[str, Any]]:
        """The findings section in reading order, for every format to render alike: ("summary",
        text), ("p", text) and ("list", [(sentence, what follows it, survives)])."""
        if not self.tested:
            return [("summary", "No paired difference could be tested: the report has one loss, or no seed is "
                                "shared with the baseline and no scores files give a bootstrap.")]
        out: list[tuple[str, Any]] = [("summary", self.summary())]
        if self.bootstrap_note():
            out.append(("p", self.bootstrap_note()))
        survivors = [c for c in self.findings if c.survives]
        others = [c for c in self.findings if not c.survives]
        if survivors:
            out += [("p", "Differences that survive the adjustment:"),
                    ("list", [(c.sentence(labels), f"(adjusted p = {c.p_adjusted:.3g})", True) for c in survivors])]
        else:
            out.append(("p", self.no_survivor_note()))
        if others:
            out += [("p", f"Excluding zero before the adjustment only (not findings: of {self.tested} cells, about "
                          f"{self.expected_by_chance:.1f} would by chance alone):"),
                    ("list", [(c.sentence(labels), f"(p = {c.p:.3g}, adjusted {c.p_adjusted:.3g})", False)
                              for c in others])]
        return out

    @property
    def more_than_chance(self) -> bool:
        """Whether this many cells excluding zero is itself unlikely by chance (binomial tail
        P(X >= unadjusted) < alpha with X ~ Bin(tested, alpha)); cells are not independent, so
        this is a rough guide for the wording, never a finding."""
        if not self.tested or not self.unadjusted:
            return False
        from scipy.special import bdtrc

        return bool(bdtrc(self.unadjusted - 1, self.tested, self.alpha) < self.alpha)

    def bootstrap_note(self) -> str | None:
        """What a finding resting on one shared seed can and cannot show (None when none does)."""
        if not self.bootstrapped:
            return None
        return (f"{self.bootstrapped} of the {self.tested} cells rest on one seed shared with the baseline: their "
                "intervals and p-values are bootstraps over test samples, which cover the test sets' sampling but "
                "not the variation between training runs (another seed may well not repeat them).")

    def no_survivor_note(self) -> str:
        """The sentence for a family where nothing survives, worded by `more_than_chance`."""
        if self.more_than_chance:
            return (f"No difference survives the adjustment. Yet {self.unadjusted} cells exclude zero before it, "
                    f"more than the {self.expected_by_chance:.1f} chance alone would give: some of these "
                    "differences are probably real, but none is clear enough at this number of seeds to be named.")
        return (f"No difference survives the adjustment, and the {self.unadjusted} cells that exclude zero before "
                f"it are about as many as chance alone gives ({self.expected_by_chance:.1f}): the tested cells show "
                "no difference between the losses that can be told from chance.")

    @property
    def bootstrapped(self) -> int:
        """How many tested cells rest on one shared seed (a bootstrap over test samples)."""
        return sum(c.interval != "t over seeds" for c in self.cells)


def collect(cells: list[Finding], method: str = "bh", alpha: float = ALPHA) -> Findings:
    """Adjust the family `cells` (each with its raw p) and count what survives."""
    p = np.array([c.p for c in cells], dtype=float)
    reject, adjusted = adjust(p, method, alpha)
    for cell, r, a in zip(cells, reject, adjusted, strict=True):
        cell.survives, cell.p_adjusted = bool(r and cell.excludes_zero), float(a)
    tested = int(np.isfinite(p).sum())
    family = [c for c in cells if math.isfinite(c.p)]
    shown = [c for c in family if c.excludes_zero]
    shown.sort(key=lambda c: (not c.survives, c.p))
    return Findings(method, alpha, tested, len(shown), sum(c.survives for c in shown), shown, family)


# Words for the report's sentences.
ID_WORDS = {"acc": "accuracy", "ece": "ECE", "aece": "adaptive ECE", "nll": "NLL", "brier": "Brier score",
            "aurc": "AURC", "abstain_rate": "abstain rate", "ts_temperature": "fitted temperature",
            "ts_ece": "ECE after temperature scaling", "ts_nll": "NLL after temperature scaling",
            "ts_brier": "Brier score after temperature scaling"}
OOD_WORDS = {"auroc": "AUROC", "fpr95": "FPR@95"}


def family_cells(deltas: Any, baseline: str, several_groups: bool) -> list[Finding]:
    """The report's family of tested cells from `deltas.compute_deltas` output: per suite and
    model and non-baseline loss, every ID metric, and the near- and far-mean AUROC and FPR@95 of
    every detector at its default settings (per-set cells and NAME[tuned] rows are shown in the
    tables but not tested). Cells without a p-value (one pair and no scores files) stay out."""
    from .tidy import ID_METRICS, OOD_HEADLINE, TUNED

    cells = []
    for row in deltas.itertuples(index=False):
        if row.loss == baseline:
            continue
        where = f"{row.suite} / {row.model}: " if several_groups else ""
        if row.group == "id":
            if row.metric not in ID_METRICS:
                continue
            _, higher, decimals = ID_METRICS[row.metric]
            what = where + ID_WORDS.get(row.metric, row.metric)
        elif row.dataset in ("near mean", "far mean") and row.metric in OOD_HEADLINE and not row.detector.endswith(TUNED):
            higher, decimals = OOD_HEADLINE[row.metric][1], 2
            what = f"{where}{row.group}-OOD {row.detector} {OOD_WORDS[row.metric]}"
        else:
            continue
        p = float(row.p) if row.p is not None else math.nan
        better = None if higher is None else bool((row.delta > 0) == higher)
        cells.append(Finding(row.loss, baseline, what, row.metric, float(row.delta), float(row.delta_lo),
                             float(row.delta_hi), p, math.nan, False, better, decimals,
                             {"suite": row.suite, "model": row.model, "detector": row.detector,
                              "dataset": row.dataset, "group": row.group},
                             str(getattr(row, "interval", "t over seeds"))))
    return cells


def report_findings(deltas: Any, baseline: str, method: str = "bh", alpha: float = ALPHA) -> Findings:
    """The findings of a report: its family of cells (`family_cells`), adjusted by `method`."""
    several = len({(s, m) for s, m in zip(deltas["suite"], deltas["model"], strict=True)}) > 1
    return collect(family_cells(deltas, baseline, several), method, alpha)


def survivor_keys(findings: Findings) -> frozenset[tuple]:
    """The (suite, model, detector, dataset, group, metric, loss) keys of the surviving cells."""
    return frozenset(c.key for c in findings.findings if c.survives)
