"""Paired differences to the baseline: each cell's Δ, its 95% interval and its p-value.

Runs of one seed share initialisation and data order across losses, so differences are
taken seed by seed and averaged; the interval is the t interval over those differences and
the p-value the paired t-test behind it. With a single shared seed, the interval and p-value
come from a bootstrap over test samples (stats.bootstrap_table) where the scores files are
there. An interval that runs past the largest possible difference of its metric (e.g. 100
points of FPR@95) is clipped there and marked `clipped`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .findings import clip_interval
from .tidy import KEYS

CONFIDENCE = 0.95


def paired_differences(table: pd.DataFrame, baseline: str, keys: list[str] = KEYS) -> pd.DataFrame:
    """Per key and loss: the mean of per-seed differences to `baseline`, its 95% t interval
    (none for a single seed) and the two-sided paired t-test's p-value (`findings.t_test_p`,
    here for every cell at once). `keys`: the columns that name a cell (besides loss and seed)."""
    from scipy.special import (  # the t distribution, without scipy.stats' second of imports
        stdtr,
        stdtrit,
    )

    base = table[table["loss"] == baseline][[*keys, "seed", "value"]]
    others = table[table["loss"] != baseline]
    merged = others.merge(base, on=[*keys, "seed"], suffixes=("", "_base"))
    merged = merged.assign(diff=merged["value"] - merged["value_base"])
    out = merged.groupby([*keys, "loss"], sort=False)["diff"].agg(delta="mean", sd="std", pairs="count").reset_index()
    n, mean, sd = out["pairs"].to_numpy(float), out["delta"].to_numpy(float), out["sd"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.maximum(n - 1, 1)
        half = np.where(n > 1, np.where(sd > 0, stdtrit(df, 0.5 + CONFIDENCE / 2) * sd / np.sqrt(n), 0.0), np.nan)
        t = mean / (sd / np.sqrt(n))
        p = np.where(n < 2, np.nan, np.where(sd > 0, 2.0 * stdtr(df, -np.abs(t)), np.where(mean != 0, 0.0, 1.0)))
    out["delta_lo"], out["delta_hi"], out["p"] = mean - half, mean + half, p
    return out[[*keys, "loss", "delta", "delta_lo", "delta_hi", "pairs", "p"]]


def clip_to_range(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s intervals cut to each metric's range of differences, with `clipped` saying where."""
    clipped = [clip_interval(m, lo, hi) for m, lo, hi in zip(frame["metric"], frame["delta_lo"], frame["delta_hi"],
                                                              strict=True)]
    return frame.assign(delta_lo=[c[0] for c in clipped], delta_hi=[c[1] for c in clipped],
                        clipped=[c[2] for c in clipped])


def with_bootstrap(deltas: pd.DataFrame, table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`paired_differences` output with single-pair rows given a bootstrap interval and p-value
    over test samples where both runs' scores files are there; intervals clipped to each
    metric's range (`clipped`), and whether each excludes zero."""
    from .stats import bootstrap_table

    boot = bootstrap_table(table, baseline)
    merged = deltas.merge(boot, on=[*KEYS, "loss"], how="left", suffixes=("", "_boot"))
    for column in ("delta_lo", "delta_hi", "delta_lo_boot", "delta_hi_boot", "p", "p_boot"):
        merged[column] = merged[column].astype(float)
    single = (merged["pairs"] == 1) & merged["delta_lo_boot"].notna()
    for column in ("delta_lo", "delta_hi", "p"):
        merged.loc[single, column] = merged.loc[single, f"{column}_boot"]
    merged["interval"] = np.where(merged["pairs"] > 1, "t over seeds",
                                  np.where(single, "bootstrap over samples", "none"))
    merged = clip_to_range(merged)
    merged["excludes_zero"] = (merged["delta_lo"] > 0) | (merged["delta_hi"] < 0)
    return merged.drop(columns=["delta_lo_boot", "delta_hi_boot", "p_boot", "resamples"])


def compute_deltas(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every Δ cell of a report against `baseline`, with its interval, p-value and clipping."""
    return with_bootstrap(paired_differences(table, baseline), table, baseline)
