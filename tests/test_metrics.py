"""halo_bench.evaluate.metrics against independent references.

scikit-learn is the reference for the ranking metrics, NLL and Brier; ECE, AECE
and AURC are checked against plain-Python loops written here from the
definitions in docs/protocol.md, not from the module's code.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from sklearn.metrics import (
    auc,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from halo_bench.evaluate import metrics as M

SEEDS = [0, 1, 2, 3]
# (n_id, n_ood, round_to): round_to=None keeps continuous scores, 1 rounds to
# one decimal (heavy ties across ID and OOD), 0 gives a handful of values.
SHAPES = [
    (300, 300, None),
    (300, 300, 1),
    (1000, 37, None),
    (23, 800, 1),
    (200, 150, 0),
    (20, 20, None),  # 19/20 == 0.95 exactly: the tpr boundary case
    (1, 5, None),
    (7, 1, 1),
]


def make_scores(seed: int, n_id: int, n_ood: int, round_to: int | None):
    rng = np.random.default_rng(seed)
    sid = rng.normal(1.0, 1.0, n_id)
    sood = rng.normal(0.0, 1.2, n_ood)
    if round_to is not None:
        sid, sood = np.round(sid, round_to), np.round(sood, round_to)
    return sid, sood


def sk_fpr_at(y, s, tpr=0.95, drop_intermediate=False):
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=drop_intermediate)
    return fpr[np.argmax(tprs >= tpr)]


def sk_aupr(y, s):
    precision, recall, _ = precision_recall_curve(y, s)
    return auc(recall, precision)


score_cases = pytest.mark.parametrize(
    "seed,shape", [(seed, shape) for seed in SEEDS for shape in SHAPES]
)


# --------------------------------------------------------------------------- #
# OOD metrics vs scikit-learn
# --------------------------------------------------------------------------- #


@score_cases
def test_ood_metrics_match_sklearn(seed, shape):
    sid, sood = make_scores(seed, *shape)
    s = np.concatenate([sid, sood])
    is_id = np.r_[np.ones(sid.size), np.zeros(sood.size)]
    is_ood = 1 - is_id

    assert M.auroc(sid, sood) == pytest.approx(roc_auc_score(is_id, s), abs=1e-12)
    # ID positive: the paper convention.
    ref_fpr95 = sk_fpr_at(is_id, s)
    assert M.fpr95(sid, sood) == ref_fpr95
    # OOD positive on negated scores: OpenOOD v1.5 / pytorch-ood.
    ref_openood = sk_fpr_at(is_ood, -s)
    assert M.fpr95_openood(sid, sood) == ref_openood
    if shape[2] is None:
        # OpenOOD v1.5 calls roc_curve with its default drop_intermediate=True.
        # Without ties that picks the same point; with ties it may not (see
        # test_openood_drop_intermediate_differs_under_ties).
        assert sk_fpr_at(is_id, s, drop_intermediate=True) == ref_fpr95
        assert sk_fpr_at(is_ood, -s, drop_intermediate=True) == ref_openood

    assert M.aupr_in(sid, sood) == pytest.approx(sk_aupr(is_id, s), abs=1e-12)
    assert M.aupr_out(sid, sood) == pytest.approx(sk_aupr(is_ood, -s), abs=1e-12)
    assert M.aupr(sid, sood) == M.aupr_in(sid, sood)

    got = M.ood_metrics(sid, sood)
    assert tuple(got) == M.OOD_METRICS
    assert got["auroc"] == pytest.approx(100 * roc_auc_score(is_id, s), abs=1e-10)
    assert got["fpr95"] == pytest.approx(100 * ref_fpr95, abs=1e-10)
    assert got["fpr95_openood"] == pytest.approx(100 * ref_openood, abs=1e-10)
    assert got["aupr_in"] == pytest.approx(100 * sk_aupr(is_id, s), abs=1e-10)
    assert got["aupr_out"] == pytest.approx(100 * sk_aupr(is_ood, -s), abs=1e-10)
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tpr", [0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_fpr_at_tpr_any_level(seed, tpr):
    sid, sood = make_scores(seed, 150, 90, 1)
    s = np.concatenate([sid, sood])
    y = np.r_[np.ones(sid.size), np.zeros(sood.size)]
    assert M.fpr_at_tpr(sid, sood, tpr) == sk_fpr_at(y, s, tpr)


def test_fpr_at_tpr_brute_force_threshold_definition():
    # Literal reading of the definition: the largest t among all scores with
    # mean(pos >= t) >= tpr, then mean(neg >= t).
    rng = np.random.default_rng(7)
    pos, neg = np.round(rng.normal(1, 1, 60), 1), np.round(rng.normal(0, 1, 45), 1)
    for tpr in (0.3, 0.95, 1.0):
        t = max(v for v in np.r_[pos, neg] if np.mean(pos >= v) >= tpr)
        assert M.fpr_at_tpr(pos, neg, tpr) == np.mean(neg >= t)


def test_openood_drop_intermediate_differs_under_ties():
    # 20 positives: 18 at 3.0, then (1 pos, 1 neg) tied at 2.0 and again at
    # 1.0. The ROC point reaching tpr 0.95 sits mid-way on a straight segment
    # of equal steps, which roc_curve's default drop_intermediate=True removes,
    # so OpenOOD's code reports the next point. We follow the full curve (as
    # pytorch-ood / torchmetrics do).
    pos = np.r_[np.full(18, 3.0), 2.0, 1.0]
    neg = np.r_[2.0, 1.0, np.zeros(8)]
    y = np.r_[np.ones(20), np.zeros(10)]
    s = np.r_[pos, neg]
    assert M.fpr_at_tpr(pos, neg) == pytest.approx(0.1)
    assert sk_fpr_at(y, s, drop_intermediate=False) == pytest.approx(0.1)
    assert sk_fpr_at(y, s, drop_intermediate=True) == pytest.approx(0.2)


def test_auroc_invariant_to_input_dtype():
    sid, sood = make_scores(3, 400, 300, None)
    sid32, sood32 = sid.astype(np.float32), sood.astype(np.float32)
    ref = M.ood_metrics(sid32.astype(np.float64), sood32.astype(np.float64))
    assert M.ood_metrics(sid32, sood32) == ref
    assert M.auroc(sid.astype(np.float16), sood.astype(np.float16)) == pytest.approx(
        M.auroc(sid.astype(np.float16).astype(np.float64), sood.astype(np.float16).astype(float))
    )


def test_infinite_scores_rank_normally():
    sid = np.array([np.inf, np.inf, 2.0, 1.0])
    sood = np.array([np.inf, -np.inf, 0.0])
    finite_sid = np.array([10.0, 10.0, 2.0, 1.0])
    finite_sood = np.array([10.0, -10.0, 0.0])
    assert M.ood_metrics(sid, sood) == M.ood_metrics(finite_sid, finite_sood)


# --------------------------------------------------------------------------- #
# hand-made OOD cases
# --------------------------------------------------------------------------- #


def test_perfect_separation():
    sid = np.linspace(1.0, 2.0, 50)
    sood = np.linspace(-2.0, 0.5, 80)
    got = M.ood_metrics(sid, sood)
    assert got == {
        "auroc": 100.0,
        "fpr95": 0.0,
        "fpr95_openood": 0.0,
        "aupr_in": 100.0,
        "aupr_out": 100.0,
    }
    # Reversed: every OOD sample beats every ID sample.
    worst = M.ood_metrics(sood, sid)
    assert worst["auroc"] == 0.0
    assert worst["fpr95"] == 100.0
    assert worst["fpr95_openood"] == 100.0


def test_constant_scores():
    sid, sood = np.full(40, 0.3), np.full(60, 0.3)
    got = M.ood_metrics(sid, sood)
    assert got["auroc"] == 50.0
    # One threshold only: keeping any ID sample keeps every OOD sample.
    assert got["fpr95"] == 100.0
    assert got["fpr95_openood"] == 100.0
    # One PR point (recall 1, precision = base rate) joined to (0, 1).
    assert got["aupr_in"] == pytest.approx(100 * (1 + 0.4) / 2)
    assert got["aupr_out"] == pytest.approx(100 * (1 + 0.6) / 2)


def test_identical_distributions_auroc_near_half():
    rng = np.random.default_rng(0)
    assert M.auroc(rng.normal(size=20000), rng.normal(size=20000)) == pytest.approx(0.5, abs=0.01)


def test_fpr95_conventions_differ():
    # 20 ID scores 1..20, OOD scores 0.5 and 10.5 ... the two conventions
    # look at opposite tails, so they give different numbers.
    sid = np.arange(1.0, 21.0)
    sood = np.r_[np.full(19, 0.5), 10.5]
    # ID positive: threshold = 2 (keeps 19/20 ID) -> only 10.5 passes.
    assert M.fpr95(sid, sood) == pytest.approx(1 / 20)
    # OOD positive on -score: flag 95% of OOD = the 19 at 0.5 -> no ID flagged.
    assert M.fpr95_openood(sid, sood) == 0.0


# --------------------------------------------------------------------------- #
# ID metrics: references written independently
# --------------------------------------------------------------------------- #


def loop_ece(conf, correct, n_bins=15):
    edges = [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)]
    members = [[] for _ in range(n_bins)]
    for c, ok in zip(conf.tolist(), correct.tolist()):
        b = 0  # confidence 0 (or the first interval) -> bin 0
        for i in range(n_bins):
            if edges[i] < c <= edges[i + 1]:
                b = i
                break
        members[b].append((c, ok))
    total = 0.0
    for m in members:
        if m:
            acc = sum(ok for _, ok in m) / len(m)
            avg = sum(c for c, _ in m) / len(m)
            total += len(m) / len(conf) * abs(acc - avg)
    return total


def loop_aece(conf, correct, n_bins=15):
    n = len(conf)
    order = sorted(range(n), key=lambda i: conf[i])  # Python's sort is stable
    base, extra = divmod(n, n_bins)
    total, start = 0.0, 0
    for b in range(n_bins):
        size = base + (1 if b < extra else 0)
        chunk = order[start : start + size]
        start += size
        if chunk:
            acc = sum(correct[i] for i in chunk) / size
            avg = sum(conf[i] for i in chunk) / size
            total += size / n * abs(acc - avg)
    return total


def loop_aurc(conf, correct):
    n = len(conf)
    order = sorted(range(n), key=lambda i: -conf[i])  # stable: ties keep input order
    errors, area = 0, 0.0
    for k, i in enumerate(order, start=1):
        errors += 0 if correct[i] else 1
        area += errors / k
    return area / n


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_probs(seed, n, c, temp=1.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, c)) / temp
    labels = rng.integers(0, c, n)
    logits[np.arange(n), labels] += rng.normal(1.0, 1.0, n)  # better than chance
    return softmax(logits), labels


CAL_CASES = [(seed, n, ties) for seed in SEEDS for n, ties in [(500, False), (500, True), (9, False)]]


@pytest.mark.parametrize("seed,n,ties", CAL_CASES)
@pytest.mark.parametrize("n_bins", [15, 10, 1])
def test_ece_aece_match_loops(seed, n, ties, n_bins):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, n)
    if ties:
        # Rounding puts many samples on shared values, and on bin edges k/15.
        conf = np.round(conf * 15) / 15
        conf[:3] = [0.0, 1.0, 1 / 15]
    correct = rng.uniform(0, 1, n) < conf
    assert M.ece(conf, correct, n_bins) == pytest.approx(loop_ece(conf, correct, n_bins), abs=1e-12)
    assert M.aece(conf, correct, n_bins) == pytest.approx(
        loop_aece(conf, correct, n_bins), abs=1e-12
    )


def test_ece_bin_edges_and_zero():
    # 1/15 belongs to the first bin (i/n, (i+1)/n]; 0 joins the first bin too.
    conf = np.array([0.0, 1 / 15, 1 / 15 + 1e-9])
    correct = np.array([1, 1, 0])
    # bins: {0, 1/15} acc 1, conf 1/30; {1/15+eps} acc 0.
    expect = (2 / 3) * abs(1 - 1 / 30) + (1 / 3) * (1 / 15 + 1e-9)
    assert M.ece(conf, correct) == pytest.approx(expect, abs=1e-15)
    assert M.ece(conf, correct) == pytest.approx(loop_ece(conf, correct), abs=1e-15)


def test_ece_perfectly_calibrated_and_confident_wrong():
    assert M.ece(np.ones(10), np.ones(10)) == 0.0
    assert M.ece(np.ones(10), np.zeros(10, bool)) == 1.0
    assert M.aece(np.ones(10), np.zeros(10, bool)) == 1.0


def test_aece_fewer_samples_than_bins():
    conf, correct = np.array([0.9, 0.2, 0.6]), np.array([True, False, False])
    assert M.aece(conf, correct, 15) == pytest.approx(loop_aece(conf, correct, 15))
    assert M.aece(conf, correct, 15) == pytest.approx((0.1 + 0.2 + 0.6) / 3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_aurc_matches_loop(seed, ties):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, 400)
    if ties:
        conf = np.round(conf, 1)
    correct = rng.uniform(0, 1, 400) < conf
    assert M.aurc(conf, correct) == pytest.approx(loop_aurc(conf, correct), abs=1e-12)


def test_aurc_hand_cases():
    # Errors ranked last: risks 0, 0, 1/3, 2/4 -> mean 5/24.
    assert M.aurc([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]) == pytest.approx(5 / 24)
    # Errors ranked first: risks 1, 1, 2/3, 2/4.
    assert M.aurc([0.6, 0.7, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)
    # Ties keep input order (stable): all tied, first sample wrong.
    assert M.aurc([0.5, 0.5], [0, 1]) == pytest.approx((1 + 0.5) / 2)
    assert M.aurc([0.5, 0.5], [1, 0]) == pytest.approx((0 + 0.5) / 2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [2, 3, 10])
def test_nll_brier_match_sklearn(seed, c):
    probs, labels = make_probs(seed, 300, c, temp=3.0)  # temp keeps probs away from 0
    assert probs.min() > 1e-6
    assert M.nll(probs, labels) == pytest.approx(
        log_loss(labels, probs, labels=list(range(c))), rel=1e-12
    )

    onehot = np.eye(c)[labels]
    ref = float(np.mean(np.sum((probs.astype(np.float64) - onehot) ** 2, axis=1)))
    assert M.brier(probs, labels) == pytest.approx(ref, rel=1e-12)

    params = inspect.signature(brier_score_loss).parameters
    if "scale_by_half" in params:  # sklearn >= 1.7: multiclass Brier
        sk = brier_score_loss(labels, probs, labels=list(range(c)), scale_by_half=False)
        assert M.brier(probs, labels) == pytest.approx(sk, rel=1e-12)
        # Its default halves only for <= 2 columns (the binary convention).
        sk_auto = brier_score_loss(labels, probs, labels=list(range(c)))
        assert M.brier(probs, labels) == pytest.approx(sk_auto * (2 if c == 2 else 1), rel=1e-12)


def test_nll_clamp():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    labels = np.array([1, 0])
    assert M.nll(probs, labels) == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2)


def test_float32_inputs_computed_in_float64():
    probs, labels = make_probs(1, 200, 5)
    p32 = probs.astype(np.float32)
    p64 = p32.astype(np.float64)
    assert M.nll(p32, labels) == M.nll(p64, labels)
    assert M.brier(p32, labels) == M.brier(p64, labels)
    assert M.id_metrics(p32, labels, 5) == M.id_metrics(p64, labels, 5)


# --------------------------------------------------------------------------- #
# id_metrics: CCE (K columns) and HALO (K + 1 columns)
# --------------------------------------------------------------------------- #


def manual_id_metrics(probs, labels, k):
    pred = np.array([int(np.argmax(row[:k])) for row in probs])
    conf = np.array([row[p] for row, p in zip(probs, pred)])
    correct = pred == labels
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1
    out = {
        "acc": 100 * correct.mean(),
        "ece": loop_ece(conf, correct),
        "aece": loop_aece(conf, correct),
        "nll": -np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))),
        "brier": np.mean(np.sum((probs - onehot) ** 2, axis=1)),
        "aurc": loop_aurc(conf, correct),
    }
    if probs.shape[1] == k + 1:
        out["abstain_rate"] = 100 * np.mean([np.argmax(row) == k for row in probs])
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_id_metrics_cce(seed):
    k = 6
    probs, labels = make_probs(seed, 400, k)
    got = M.id_metrics(probs, labels, k)
    assert set(got) == {"acc", "ece", "aece", "nll", "brier", "aurc"}
    ref = manual_id_metrics(probs, labels, k)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


@pytest.mark.parametrize("seed", SEEDS)
def test_id_metrics_halo(seed):
    k = 6
    rng = np.random.default_rng(seed)
    n = 400
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 2.0, (n, k + 1))
    logits[np.arange(n), labels] += 1.5
    # Push a third of the samples towards abstain so it often wins the K+1 argmax.
    logits[: n // 3, k] += 4.0
    probs = softmax(logits)
    got = M.id_metrics(probs, labels, k)
    assert set(got) == {"acc", "ece", "aece", "nll", "brier", "aurc", "abstain_rate"}
    ref = manual_id_metrics(probs, labels, k)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 10 < got["abstain_rate"] < 60  # the construction really exercises abstain

    # Accuracy ignores the abstain column even where abstain wins overall.
    abstain_wins = probs.argmax(1) == k
    assert abstain_wins.any()
    pred_k = probs[:, :k].argmax(1)
    assert got["acc"] == pytest.approx(100 * np.mean(pred_k == labels))
    # Confidence is the K+1 softmax value, not renormalised over K classes.
    conf = probs[np.arange(n), pred_k]
    assert got["ece"] == pytest.approx(M.ece(conf, pred_k == labels), abs=1e-15)
    renorm = conf / probs[:, :k].sum(1)
    assert got["ece"] != pytest.approx(M.ece(renorm, pred_k == labels), abs=1e-6)


def test_id_metrics_halo_hand_case():
    # K = 2; rows: abstain wins but class 0 is right; confident right; abstain
    # ties class 1 (tie -> class, not abstain); wrong.
    probs = np.array(
        [
            [0.3, 0.1, 0.6],
            [0.1, 0.8, 0.1],
            [0.1, 0.45, 0.45],
            [0.7, 0.2, 0.1],
        ]
    )
    labels = np.array([0, 1, 1, 1])
    got = M.id_metrics(probs, labels, 2)
    assert got["acc"] == pytest.approx(75.0)
    assert got["abstain_rate"] == pytest.approx(25.0)
    # Brier counts the abstain column against onehot 0.
    expect_brier = np.mean(
        [
            0.7**2 + 0.1**2 + 0.6**2,
            0.1**2 + 0.2**2 + 0.1**2,
            0.1**2 + 0.55**2 + 0.45**2,
            0.7**2 + 0.8**2 + 0.1**2,
        ]
    )
    assert got["brier"] == pytest.approx(expect_brier)
    # Confidences 0.3, 0.8, 0.45, 0.7 with correct 1, 1, 1, 0, ranked 0.8, 0.7, 0.45, 0.3.
    assert got["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "fn", [M.auroc, M.fpr95, M.fpr95_openood, M.aupr, M.aupr_in, M.aupr_out, M.ood_metrics]
)
def test_ood_validation(fn):
    ok = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([0.1, np.nan]), ok)
    with pytest.raises(ValueError, match="NaN"):
        fn(ok, np.array([np.nan]))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), ok)
    with pytest.raises(ValueError, match="empty"):
        fn(ok, [])
    with pytest.raises(ValueError, match="1-D"):
        fn(ok.reshape(3, 1), ok)
    with pytest.raises(ValueError, match="numeric"):
        fn(np.array(["a", "b"]), ok)


def test_fpr_at_tpr_rejects_bad_level():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="tpr"):
            M.fpr_at_tpr([1.0, 2.0], [0.0], bad)


def test_calibration_validation():
    conf, correct = np.array([0.2, 0.9]), np.array([0, 1])
    for fn in (M.ece, M.aece, M.aurc):
        with pytest.raises(ValueError, match="entries"):
            fn(conf, np.array([1]))
        with pytest.raises(ValueError, match="NaN"):
            fn(np.array([np.nan, 0.5]), correct)
        with pytest.raises(ValueError, match="empty"):
            fn(np.array([]), np.array([]))
        with pytest.raises(ValueError, match="0/1"):
            fn(conf, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.ece(np.array([0.2, 1.5]), correct)
    with pytest.raises(ValueError, match="n_bins"):
        M.ece(conf, correct, 0)
    with pytest.raises(ValueError, match="n_bins"):
        M.aece(conf, correct, 2.5)


def test_probs_validation():
    probs, labels = make_probs(0, 10, 4)
    with pytest.raises(ValueError, match="2-D"):
        M.nll(probs[0], labels[:1])
    with pytest.raises(ValueError, match="entries"):
        M.brier(probs, labels[:5])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        M.nll(probs, np.r_[labels[:-1], 4])
    with pytest.raises(ValueError, match="integer"):
        M.nll(probs, labels + 0.5)
    with pytest.raises(ValueError, match="logits"):
        M.nll(np.log(probs), labels)
    with pytest.raises(ValueError, match="sum to 1"):
        M.brier(probs * 0.5, labels)
    with pytest.raises(ValueError, match="NaN"):
        bad = probs.copy()
        bad[0, 0] = np.nan
        M.brier(bad, labels)
    with pytest.raises(ValueError, match="empty"):
        M.nll(np.zeros((0, 4)), np.zeros(0, int))
    # Float-typed integral labels are fine.
    assert M.nll(probs, labels.astype(float)) == M.nll(probs, labels)


def test_id_metrics_validation():
    probs, labels = make_probs(0, 10, 4)
    with pytest.raises(ValueError, match="columns"):
        M.id_metrics(probs, labels, 2)
    with pytest.raises(ValueError, match="num_classes"):
        M.id_metrics(probs, labels, 0)
    # With K + 1 columns, a label pointing at the abstain column is invalid.
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        M.id_metrics(probs, np.r_[labels[:-1], 3], 3)
