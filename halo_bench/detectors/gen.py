"""GEN, the generalised entropy score (Liu et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import (
    POSITIVE,
    POSITIVE_INT,
    Detector,
    DetectorContext,
    class_logits,
    register_detector,
    softplus,
    top_and_rest,
)

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it

    from ..features.passes import SplitOutputs


@register_detector
class GEN(Detector):
    """-sum over the top-M probabilities of p^gamma (1 - p)^gamma, p the softmax of the K class
    logits (HALO: of its K logits relative to the abstain class; the abstain column is left out,
    as every logit-based baseline here reads the K class logits).

    OpenOOD's formula, float64, no clamping, each term as exp(gamma (log p + log(1 - p))) with
    1 - p of the top class as the sum of the other probabilities (r of `base.top_and_rest`):
    computed as 1 - p it rounds to 0 for a confident sample, whose top term is then lost.
    pytorch-ood's `GEN` returns the *mean* over the M terms (the sum / M) with the OOD sign,
    and clamps p to [1e-7, 1 - 1e-7] first: that moves the scores of confident samples
    (p < 1e-7 contributes (1e-7)^gamma = 0.2 for gamma 0.1, not ~0), so the two agree only
    where no probability falls outside the clamp.
    """

    name = "gen"
    summary = "-sum_top-M p^gamma (1-p)^gamma over the K-class softmax"
    defaults = {"gamma": 0.1, "m": 100.0}
    checks = {"gamma": POSITIVE, "m": POSITIVE_INT}
    # OpenOOD's gen.yml sweep (added with GEN's v1.5 leaderboard entry, after the v1.5 tag).
    tune_grid = {"gamma": (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0), "m": (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0)}
    reads = "logits"

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        import torch

        gamma = self.float_param("gamma")
        logits = class_logits(outputs.logits, ctx.num_classes)
        top, index, rest = top_and_rest(logits, ctx.num_classes)
        log_p = logits - top[:, None] - softplus(rest)[:, None]
        log_q = torch.log1p(-log_p.exp())  # log(1 - p): exact for every class but the top one (p <= 1/2)
        log_q.scatter_(1, index[:, None], (rest - softplus(rest))[:, None])
        terms = (gamma * (log_p + log_q)).exp()
        m = min(self.int_param("m"), logits.shape[1])
        top_m = log_p.argsort(dim=1, descending=True)[:, :m]
        return (-terms.gather(1, top_m).sum(dim=1)).numpy()
