"""Bootstrap intervals over test samples for single-seed comparisons (no torch, no matplotlib).

With one seed per loss there is no t interval over seeds; the sampling error of the
test sets is then what a reader can still see. `bootstrap_delta` resamples the ID
test set and each OOD set with replacement (the same resampled indices for both
losses: they were scored on the same samples, so the difference is paired at the
sample level) and recomputes the headline metrics of both runs.

Resampling protocol (a reference implementation only needs this to agree):
``rng = np.random.default_rng(seed)``; for each of the `resamples` rounds, first the ID
indices ``rng.integers(0, n_id, n_id)``, then, for each OOD set in the given order,
``rng.integers(0, n_set, n_set)``. The interval is the 2.5 and 97.5 percentiles
(numpy's default linear interpolation) of the resampled differences.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import HaloBenchError
from .findings import bootstrap_p

RESAMPLES = 1000
SEED = 0
N_BINS = 15  # ECE bins, as metrics.id_metrics
CONFIDENCE_COLUMN = "msp"  # for ID rows: the top-label probability ECE is computed from (see `confidence`)


@dataclass
class Scores:
    """One run's per-sample scores: ID confidence/correctness and per-detector scores per split."""

    conf: np.ndarray | None  # msp on the ID set (None without the msp detector)
    correct: np.ndarray  # pred == label on the ID set, 0/1
    id_scores: dict[str, np.ndarray]  # detector -> ID scores
    ood: dict[str, tuple[str, dict[str, np.ndarray]]]  # set -> (group, detector -> scores)


def read_scores(path: str | Path, data: bytes | None = None) -> pd.DataFrame:
    """A scores.csv.gz file (or its bytes, already read), or a HaloBenchError naming it."""
    try:
        data = Path(path).read_bytes() if data is None else data
        frame = pd.read_csv(io.BytesIO(gzip.decompress(data)))
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise HaloBenchError(f"{path}: not a readable scores file ({exc}); re-run `halo-bench eval` on its "
                             "checkpoint, or move it away to report without it.") from None
    missing = [c for c in ("dataset", "group", "label", "pred") if c not in frame.columns]
    if missing:
        raise HaloBenchError(f"{path}: scores file lacks column(s) {', '.join(missing)}; re-run `halo-bench eval`.")
    return frame


def confidence(msp: np.ndarray) -> np.ndarray:
    """The top-label probability from the `msp` column. The msp detector stores log MSP (exact
    where MSP rounds to 1); files written before it did hold MSP itself, which is always > 0,
    while log MSP never is: such a column passes through unchanged."""
    msp = np.asarray(msp, dtype=float)
    return np.exp(msp) if (msp <= 0).all() else msp


Entry = tuple[str, "str | None"]  # a scores file's path and the SHA-256 its results file recorded
SAMPLE_COLUMNS = ["dataset", "group", "index", "label", "pred"]


def run_scores(entries: list[Entry] | None) -> pd.DataFrame | None:
    """The per-sample scores of a run (`report.tidy`'s attrs["scores"] entry: the scores files of
    the run's evaluations of its current checkpoint, newest first, each with its recorded
    SHA-256): the file with the most samples (the newest among equals), plus every detector
    column it lacks from the others over exactly the same samples, so a later `eval --detectors`
    adds its columns and never hides the default evaluation's. Files absent or not the ones
    their results were computed with (`scores_mismatch` says which) are left out; None when no
    file is left."""
    if not entries:
        return None
    frames = [frame for entry in entries if (frame := _scores_of(entry)) is not None]
    if not frames:
        return None
    base = max(frames, key=len)  # the first of the largest: newest first
    merged = base
    for frame in frames:
        extra = [c for c in frame.columns if c not in merged.columns]
        if frame is base or not extra or not _same_samples(base, frame):
            continue
        merged = pd.concat([merged, frame[extra].set_axis(merged.index)], axis=1)
    return merged


def _same_samples(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    keys = [c for c in SAMPLE_COLUMNS if c in a.columns and c in b.columns]
    return len(a) == len(b) and all((a[c].to_numpy() == b[c].to_numpy()).all() for c in keys)


def _scores_of(entry: Entry) -> pd.DataFrame | None:
    path = Path(entry[0])
    try:
        stat = path.stat()
    except OSError:
        return None
    return _verified_scores(str(path), entry[1], stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _verified_scores(path: str, sha256: str | None, mtime_ns: int, size: int) -> pd.DataFrame | None:
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return None
    return read_scores(path, data)


def scores_mismatch(entries: dict[tuple, list[Entry]]) -> list[str]:
    """One line per scores file that is present but differs from the hash its results file
    recorded: a copy from another run, or a kill between the two writes. Such files are
    never used for intervals or figures."""
    out = []
    for path, sha in dict.fromkeys(entry for value in entries.values() for entry in value):
        file = Path(path)
        if sha is None or not file.is_file():
            continue
        if hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            out.append(f"{file}: not the scores its results file was computed with (hash differs); its "
                       "bootstrap intervals and figures are left out. Re-run `halo-bench eval` on that run.")
    return out


def load_scores(frame: pd.DataFrame, detectors: list[str]) -> Scores:
    ids = frame[frame["group"] == "id"]
    conf = confidence(ids[CONFIDENCE_COLUMN].to_numpy(float)) if CONFIDENCE_COLUMN in ids else None
    correct = (ids["pred"].to_numpy() == ids["label"].to_numpy()).astype(float)
    dets = [d for d in detectors if d in frame.columns]
    ood = {}
    for name, part in frame[frame["group"] != "id"].groupby("dataset", sort=False):
        ood[str(name)] = (str(part["group"].iloc[0]), {d: part[d].to_numpy(float) for d in dets})
    return Scores(conf, correct, {d: ids[d].to_numpy(float) for d in dets}, ood)


class _Ood:
    """AUROC and FPR@95 (ID positive, percent) of one (ID, OOD) score pair under resampling
    weights (rows of W and V: how often each original sample occurs in a resample). Equal to
    metrics.auroc/fpr95 on the resampled arrays (ties count 1/2; the threshold is the k-th
    largest resampled ID score with k the smallest count reaching 95%)."""

    def __init__(self, sid: np.ndarray, sood: np.ndarray) -> None:
        self.order_ood = np.argsort(sood, kind="stable")
        self.t = sood[self.order_ood]
        self.left = np.searchsorted(self.t, sid, side="left")
        self.right = np.searchsorted(self.t, sid, side="right")
        self.order_id = np.argsort(-sid, kind="stable")
        self.sid_desc = sid[self.order_id]

    def values(self, w: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, m = w.sum(axis=1), v.sum(axis=1)
        cumv = np.concatenate([np.zeros((v.shape[0], 1)), np.cumsum(v[:, self.order_ood], axis=1)], axis=1)
        below = cumv[:, self.left] + 0.5 * (cumv[:, self.right] - cumv[:, self.left])
        auroc = (w * below).sum(axis=1) / (n * m)
        cumw = np.cumsum(w[:, self.order_id], axis=1)
        k = np.argmax(cumw / n[:, None] >= 0.95, axis=1)
        pos = np.searchsorted(self.t, self.sid_desc[k], side="left")
        accepted = m - cumv[np.arange(v.shape[0]), pos]
        return 100.0 * auroc, 100.0 * accepted / m


def _ece_acc(conf: np.ndarray | None, correct: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    n = w.sum(axis=1)
    out = {"acc": 100.0 * (w @ correct) / n}
    if conf is not None:
        edges = np.linspace(0.0, 1.0, N_BINS + 1)
        idx = np.clip(np.searchsorted(edges, np.clip(conf, 0.0, 1.0), side="left") - 1, 0, N_BINS - 1)
        onehot = np.zeros((conf.size, N_BINS))
        onehot[np.arange(conf.size), idx] = 1.0
        sum_conf = w @ (onehot * conf[:, None])
        sum_acc = w @ (onehot * correct[:, None])
        out["ece"] = np.abs(sum_acc - sum_conf).sum(axis=1) / n
    return out


def _all_metrics(runs: list[Scores], sets: list[str], w: np.ndarray, vs: list[np.ndarray],
                 prepared: list[dict[tuple[str, str], _Ood]]) -> list[dict[tuple[str, str, str], np.ndarray]]:
    """Per run: (detector, dataset, metric) -> values, one per row of the weights; ID metrics
    under detector ''."""
    out = []
    for run, prep in zip(runs, prepared, strict=True):
        values: dict[tuple[str, str, str], np.ndarray] = {}
        for metric, value in _ece_acc(run.conf, run.correct, w).items():
            values[("", "", metric)] = value
        per_group: dict[tuple[str, str, str], list[np.ndarray]] = {}
        for (det, name), ood in prep.items():
            auroc, fpr = ood.values(w, vs[sets.index(name)])
            group = run.ood[name][0]
            values[(det, name, "auroc")], values[(det, name, "fpr95")] = auroc, fpr
            per_group.setdefault((det, group, "auroc"), []).append(auroc)
            per_group.setdefault((det, group, "fpr95"), []).append(fpr)
        for (det, group, metric), vals in per_group.items():
            values[(det, f"{group} mean", metric)] = np.mean(vals, axis=0)
        out.append(values)
    return out


def _counts(indices: list[np.ndarray], size: int) -> np.ndarray:
    """Rows of per-sample counts, one row per resample's indices."""
    rows = np.asarray(indices)
    offsets = (np.arange(rows.shape[0]) * size)[:, None]
    return np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * size).reshape(-1, size).astype(float)


def bootstrap_delta(base: Scores, other: Scores, resamples: int | None = None, seed: int = SEED,
                    confidence: float = 0.95, chunk: int = 100) -> pd.DataFrame:
    """Percentile bootstrap interval of other − base for acc, ECE and, per detector both
    runs have, AUROC and FPR@95 per OOD set and per near/far mean.

    Columns: detector ('' for ID metrics), dataset (OOD set, '<group> mean', or '' for ID),
    metric, delta (on the full samples), delta_lo, delta_hi, resamples.
    """
    resamples = RESAMPLES if resamples is None else resamples
    n_id = base.correct.size
    if other.correct.size != n_id:
        raise ValueError(f"the runs have {n_id} and {other.correct.size} ID samples: not paired")
    dets = [d for d in base.id_scores if d in other.id_scores]
    sets = [s for s in base.ood if s in other.ood]
    sizes = []
    for name in sets:
        m = {len(r.ood[name][1][d]) for r in (base, other) for d in dets}
        if len(m) > 1:
            raise ValueError(f"the runs have different numbers of {name} samples: not paired")
        sizes.append(m.pop() if m else 0)
    sets = [s for s, m in zip(sets, sizes, strict=True) if m]
    sizes = [m for m in sizes if m]
    runs = [base, other]
    if base.conf is None or other.conf is None:
        runs = [Scores(None, r.correct, r.id_scores, r.ood) for r in runs]
    prepared = [{(d, s): _Ood(r.id_scores[d], r.ood[s][1][d]) for d in dets for s in sets} for r in runs]

    full = _all_metrics(runs, sets, np.ones((1, n_id)), [np.ones((1, m)) for m in sizes], prepared)
    keys = list(full[0])
    point = np.array([float(full[1][k][0] - full[0][k][0]) for k in keys])
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, chunk):
        ids, oods = [], [[] for _ in sizes]
        for _ in range(min(chunk, resamples - start)):
            ids.append(rng.integers(0, n_id, n_id))
            for j, m in enumerate(sizes):
                oods[j].append(rng.integers(0, m, m))
        vals = _all_metrics(runs, sets, _counts(ids, n_id), [_counts(o, m) for o, m in zip(oods, sizes, strict=True)],
                            prepared)
        draws.append(np.stack([vals[1][k] - vals[0][k] for k in keys], axis=1))
    alpha = (1.0 - confidence) / 2.0
    stacked = np.concatenate(draws)
    lo, hi = np.percentile(stacked, [100 * alpha, 100 * (1 - alpha)], axis=0)
    p = [bootstrap_p(stacked[:, j]) for j in range(stacked.shape[1])]
    return pd.DataFrame({"detector": [k[0] for k in keys], "dataset": [k[1] for k in keys],
                         "metric": [k[2] for k in keys], "delta": point, "delta_lo": lo, "delta_hi": hi,
                         "p": p, "resamples": resamples})


def bootstrap_table(table: pd.DataFrame, baseline: str, resamples: int | None = None,
                    seed: int = SEED) -> pd.DataFrame:
    """Bootstrap intervals for every (suite, model, loss) whose only pairing with `baseline` is
    one shared seed, where both runs' scores.csv.gz files are beside their results.json.

    `table` is `report.tidy` output (its attrs["scores"] names each run's scores file and hash).
    Columns: report.KEYS, loss, delta_lo, delta_hi, resamples.
    """
    entries: dict[tuple, tuple[str, str | None]] = table.attrs.get("scores", {})
    columns = ["suite", "model", "detector", "dataset", "group", "metric", "loss", "delta_lo", "delta_hi", "p",
               "resamples"]
    frames = []

    def scores(key: tuple, dets: list[str]) -> Scores | None:
        frame = run_scores(entries.get(key))
        return None if frame is None else load_scores(frame, dets)

    for (suite, model), part in table.groupby(["suite", "model"], sort=False):
        seeds = {loss: set(p["seed"]) for loss, p in part.groupby("loss")}
        if baseline not in seeds:
            continue
        dets = [d for d in dict.fromkeys(part["detector"]) if d]
        groups = dict(zip(part["dataset"], part["group"], strict=False))
        for loss, own in seeds.items():
            shared = sorted(own & seeds[baseline])
            if loss == baseline or len(shared) != 1:
                continue
            run_seed = shared[0]
            base = scores((suite, model, baseline, run_seed), dets)
            other = scores((suite, model, loss, run_seed), dets)
            if base is None or other is None:
                continue
            try:
                boot = bootstrap_delta(base, other, resamples, seed)
            except ValueError:
                continue  # different test samples: no paired resampling
            id_name = part[part["group"] == "id"]["dataset"].iloc[0]
            boot["dataset"] = [d if d else id_name for d in boot["dataset"]]
            boot["group"] = [("id" if not det else groups.get(d, d.split(" ")[0]))
                             for det, d in zip(boot["detector"], boot["dataset"], strict=True)]
            frames.append(boot.assign(suite=suite, model=model, loss=loss)[columns])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(edges, accuracy, mean confidence, count) per equal-width bin (lo, hi], as metrics.ece
    bins them; empty bins give NaN accuracy and confidence. `conf` may be the `msp` column as
    stored (log MSP): see `confidence`."""
    conf = confidence(conf)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, np.clip(conf, 0.0, 1.0), side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return edges, acc, mean_conf, count

