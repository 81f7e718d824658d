"""OOD-detection and calibration metrics (docs/protocol.md sections 2 and 3).

Pure numpy functions. Scores follow the benchmark convention: higher = more
in-distribution (ID). OOD metrics here return fractions in [0, 1];
`ood_metrics` converts them to percent for reporting. ID metrics return
fractions, except `acc` and `abstain_rate` in `id_metrics`, which are percent.

scikit-learn is deliberately not used here: it is the independent reference
the tests compare against, and the curve-based metrics below reproduce its
conventions (ties, appended end points) exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "OOD_METRICS",
    "auroc",
    "fpr_at_tpr",
    "fpr95",
    "fpr95_openood",
    "aupr",
    "aupr_in",
    "aupr_out",
    "ood_metrics",
    "fsood_metrics",
    "rejection_rate",
    "group_means",
    "ece",
    "aece",
    "nll",
    "brier",
    "aurc",
    "id_metrics",
]

OOD_METRICS: tuple[str, ...] = ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")

# Probabilities are clamped here before the log so that a single confident
# mistake gives a large but finite NLL (docs/protocol.md section 3).
NLL_CLAMP = 1e-12

# Slack for probabilities that come out of float32/float16 softmaxes slightly
# outside [0, 1] or with rows not summing exactly to 1. The row-sum check is
# loose on purpose: it exists to catch logits passed in place of probabilities.
_PROB_TOL = 1e-6
_ROW_SUM_TOL = 1e-2


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #


def _as_float_array(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    """1-D float64 score vector; non-empty, no NaN (+-inf is allowed: it still ranks)."""
    arr = _as_float_array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains {int(np.isnan(arr).sum())} NaN value(s)")
    return arr


def _confidence(x: np.ndarray, name: str = "confidence", unit: bool = True) -> np.ndarray:
    arr = _scores(x, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains infinite values")
    if unit:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_PROB_TOL or hi > 1.0 + _PROB_TOL:
            raise ValueError(f"{name} must lie in [0, 1], got range [{lo}, {hi}]")
        # Clip the float-rounding slack so binning never sees values outside [0, 1].
        arr = np.clip(arr, 0.0, 1.0)
    return arr


def _correct(x: np.ndarray, n: int, name: str = "correct") -> np.ndarray:
    arr = _as_float_array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but confidence has {n}")
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be boolean or 0/1")
    return arr


def _probs(x: np.ndarray, name: str = "probs") -> np.ndarray:
    arr = _as_float_array(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x C), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_PROB_TOL or hi > 1.0 + _PROB_TOL:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got range [{lo}, {hi}] (logits?)"
        )
    sums = arr.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > _ROW_SUM_TOL:
        raise ValueError(f"rows of {name} must sum to 1 (worst deviation {worst:.3g})")
    return np.clip(arr, 0.0, 1.0)


def _labels(x: np.ndarray, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but probs has {n} rows")
    if np.issubdtype(arr.dtype, np.floating):
        # Accept float-typed integer labels (e.g. from a CSV) but nothing fractional.
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(f"{name} must be integer class indices")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def _n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


# --------------------------------------------------------------------------- #
# OOD metrics (fractions)
# --------------------------------------------------------------------------- #


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    # Mann-Whitney U with average ranks: a tied (pos, neg) pair counts 1/2,
    # which is exactly the trapezoidal area under the ROC curve.
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    n_pos, n_neg = pos.size, neg.size
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    if tpr <= 0.0:
        # The ROC curve starts at threshold +inf with (fpr, tpr) = (0, 0).
        return 0.0
    n_pos = pos.size
    pos_desc = np.sort(pos)[::-1]
    # The largest admissible threshold is the k-th largest positive score with
    # the smallest k for which k / n_pos >= tpr: any higher threshold keeps at
    # most k - 1 positives. k / n_pos is evaluated as a float division, the way
    # sklearn evaluates tps / tps[-1], so boundary cases (19/20 vs 0.95) agree.
    k = int(np.argmax(np.arange(1, n_pos + 1) / n_pos >= tpr)) + 1
    threshold = pos_desc[k - 1]
    return float(np.count_nonzero(neg >= threshold) / neg.size)


def _aupr(pos: np.ndarray, neg: np.ndarray) -> float:
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(scores, kind="stable")[::-1]
    s, y = scores[order], is_pos[order]
    # One curve point per distinct score (the end of each tie group), as in
    # sklearn's _binary_clf_curve. `!=` rather than np.diff so +-inf ties
    # are not split by inf - inf = nan.
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / pos.size
    # sklearn appends (recall 0, precision 1); the points past full recall add
    # zero width, so no truncation is needed.
    x = np.r_[0.0, recall]
    p = np.r_[1.0, precision]
    return float(np.sum(np.diff(x) * (p[1:] + p[:-1]) / 2.0))


def auroc(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """Area under the ROC curve with ID as positive; ties count 1/2. Fraction in [0, 1]."""
    return _auroc(_scores(score_id, "score_id"), _scores(score_ood, "score_ood"))


def fpr_at_tpr(score_pos: np.ndarray, score_neg: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of negatives scoring >= the largest threshold that keeps >= `tpr` of positives.

    Equals the fpr at the first point with tpr >= `tpr` of
    ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)``.
    """
    if not (isinstance(tpr, (int, float, np.floating, np.integer)) and 0.0 <= tpr <= 1.0):
        raise ValueError(f"tpr must be a number in [0, 1], got {tpr!r}")
    return _fpr_at_tpr(
        _scores(score_pos, "score_pos"), _scores(score_neg, "score_neg"), float(tpr)
    )


def fpr95(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """FPR at 95% TPR with ID as positive (ODIN / energy / HALO papers)."""
    return _fpr_at_tpr(_scores(score_id, "score_id"), _scores(score_ood, "score_ood"), 0.95)


def fpr95_openood(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """FPR at 95% TPR with OOD as positive on negated scores (OpenOOD v1.5 / pytorch-ood).

    Not the same number as `fpr95`: here it is the fraction of ID samples
    flagged OOD once 95% of OOD samples are flagged.
    """
    sid, sood = _scores(score_id, "score_id"), _scores(score_ood, "score_ood")
    return _fpr_at_tpr(-sood, -sid, 0.95)


def aupr(score_pos: np.ndarray, score_neg: np.ndarray) -> float:
    """Trapezoidal area under sklearn's precision-recall curve (``auc(recall, precision)``)."""
    return _aupr(_scores(score_pos, "score_pos"), _scores(score_neg, "score_neg"))


def aupr_in(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """AUPR with ID as positive."""
    return _aupr(_scores(score_id, "score_id"), _scores(score_ood, "score_ood"))


def aupr_out(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """AUPR with OOD as positive (scores negated so higher = more OOD)."""
    sid, sood = _scores(score_id, "score_id"), _scores(score_ood, "score_ood")
    return _aupr(-sood, -sid)


def ood_metrics(score_id: np.ndarray, score_ood: np.ndarray) -> dict[str, float]:
    """All OOD metrics of docs/protocol.md section 2, in percent, keyed as `OOD_METRICS`."""
    sid, sood = _scores(score_id, "score_id"), _scores(score_ood, "score_ood")
    values = {
        "auroc": _auroc(sid, sood),
        "fpr95": _fpr_at_tpr(sid, sood, 0.95),
        "fpr95_openood": _fpr_at_tpr(-sood, -sid, 0.95),
        "aupr_in": _aupr(sid, sood),
        "aupr_out": _aupr(-sood, -sid),
    }
    return {key: 100.0 * values[key] for key in OOD_METRICS}


FSOOD_METRICS: tuple[str, ...] = ("auroc", "fpr95", "fpr95_openood")


def fsood_metrics(score_id: np.ndarray, score_shifted: np.ndarray, score_ood: np.ndarray) -> dict[str, float]:
    """Full-spectrum OOD metrics (OpenOOD v1.5's FSOOD), in percent: the clean and the
    covariate-shifted ID samples together are ID (positive), `score_ood` is OOD."""
    sid = np.concatenate([_scores(score_id, "score_id"), _scores(score_shifted, "score_shifted")])
    sood = _scores(score_ood, "score_ood")
    values = {"auroc": _auroc(sid, sood), "fpr95": _fpr_at_tpr(sid, sood, 0.95),
              "fpr95_openood": _fpr_at_tpr(-sood, -sid, 0.95)}
    return {key: 100.0 * values[key] for key in FSOOD_METRICS}


def rejection_rate(score_id: np.ndarray, score_shifted: np.ndarray, tpr: float = 0.95) -> float:
    """Percent of `score_shifted` below the threshold that keeps `tpr` of the clean ID scores
    (the threshold of `fpr95`: the largest one keeping >= 95% of them); a score equal to it is kept."""
    return 100.0 * (1.0 - _fpr_at_tpr(_scores(score_id, "score_id"), _scores(score_shifted, "score_shifted"), tpr))


# --------------------------------------------------------------------------- #
# ID / calibration metrics (fractions)
# --------------------------------------------------------------------------- #


def _ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    # Edges from linspace and membership lo < c <= hi, as Guo et al.'s
    # reference code; searchsorted(side="left") implements exactly that test.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, conf, side="left") - 1
    idx = np.clip(idx, 0, n_bins - 1)  # confidence 0 joins the first bin
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    # (n_b / N) * |acc_b - conf_b| == |sum_acc_b - sum_conf_b| / N; empty bins add 0.
    return float(np.abs(sum_acc - sum_conf).sum() / conf.size)


def _aece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, n_bins):
        if chunk.size:  # N < n_bins leaves some chunks empty
            total += abs(correct[chunk].sum() - conf[chunk].sum())
    return float(total / conf.size)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p_true = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.maximum(p_true, NLL_CLAMP))))


def _brier(probs: np.ndarray, labels: np.ndarray) -> float:
    diff = probs.copy()
    diff[np.arange(labels.size), labels] -= 1.0
    return float(np.mean(np.sum(diff * diff, axis=1)))


def _aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    # Stable sort on -confidence: tied samples keep their input order, so the
    # result is deterministic but, under ties, depends on that order.
    order = np.argsort(-conf, kind="stable")
    errors = 1.0 - correct[order]
    risk = np.cumsum(errors) / np.arange(1, conf.size + 1)
    return float(risk.mean())


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error, equal-width bins (i/n, (i+1)/n], L1 (Guo et al. 2017)."""
    conf = _confidence(confidence)
    return _ece(conf, _correct(correct, conf.size), _n_bins(n_bins))


def aece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Adaptive ECE: equal-mass bins (stable sort, np.array_split chunks), L1."""
    conf = _confidence(confidence)
    return _aece(conf, _correct(correct, conf.size), _n_bins(n_bins))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class, p clamped at 1e-12."""
    p = _probs(probs)
    return _nll(p, _labels(labels, p.shape[0], p.shape[1]))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of sum over all columns of (p - onehot)^2; range [0, 2]."""
    p = _probs(probs)
    return _brier(p, _labels(labels, p.shape[0], p.shape[1]))


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean over k = 1..N of the error rate of the top-k.

    Samples are ranked by decreasing confidence with a stable sort, so ties
    are broken by input order (deterministic, but order-dependent under ties).
    """
    conf = _confidence(confidence, unit=False)
    return _aurc(conf, _correct(correct, conf.size))


def id_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """ID metrics of docs/protocol.md section 3 for a K-way (CCE) or K+1-way (HALO) softmax.

    The prediction is the argmax over the first K columns (first index wins a
    tie); confidence is that column's probability under the full softmax, so
    abstain mass lowers it. `acc` and `abstain_rate` are percent, the rest
    fractions. `abstain_rate` (only when C == K + 1) counts samples whose
    argmax over all K + 1 columns is the abstain column; a tie between the
    abstain column and a class goes to the class.
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    k = int(num_classes)
    p = _probs(probs)
    n, c = p.shape
    if c not in (k, k + 1):
        raise ValueError(
            f"probs has {c} columns; expected num_classes={k} (CCE) or {k + 1} (HALO)"
        )
    y = _labels(labels, n, k)

    pred = np.argmax(p[:, :k], axis=1)
    conf = p[np.arange(n), pred]
    correct = (pred == y).astype(np.float64)

    out = {
        "acc": 100.0 * float(correct.mean()),
        "ece": _ece(conf, correct, 15),
        "aece": _aece(conf, correct, 15),
        "nll": _nll(p, y),
        "brier": _brier(p, y),
        "aurc": _aurc(conf, correct),
    }
    if c == k + 1:
        out["abstain_rate"] = 100.0 * float(np.mean(np.argmax(p, axis=1) == k))
    return out


def group_means(per_set: dict[str, dict], groups: tuple[str, ...],
                names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Unweighted means of the metrics `names` over each group's sets (docs/protocol.md section 2).

    `per_set` maps a set to its metrics and its "group"; a group with no set is left out."""
    out = {}
    for group in groups:
        rows = [v for v in per_set.values() if v["group"] == group]
        if rows:
            out[group] = {m: float(np.mean([r[m] for r in rows])) for m in names}
    return out
