"""Logit-based baselines: MSP, max logit, energy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import (
    POSITIVE,
    Detector,
    DetectorContext,
    class_logits,
    log_max_softmax,
    register_detector,
)

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it

    from ..features.passes import SplitOutputs


@register_detector
class MSP(Detector):
    """log MSP = -log(1 + sum_{j != top} exp(l_j - l_top)): the same order as MSP, so the same
    metrics, without the ties of confident samples whose MSP rounds to 1.0. `scores.csv.gz`
    stores this log; `stats` takes its exp where it needs the confidence."""

    # No tune_grid here or for maxlogit: OpenOOD's msp.yml and mls.yml sweep nothing.
    name = "msp"
    summary = "max softmax probability over the K classes (HALO: of the K+1 softmax), stored as its log"

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        return log_max_softmax(outputs.logits, ctx.num_classes).numpy()


@register_detector
class MaxLogit(Detector):
    name = "maxlogit"
    summary = "max logit over the K classes"

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        return class_logits(outputs.logits, ctx.num_classes).max(dim=1).values.numpy()


@register_detector
class Energy(Detector):
    name = "energy"
    summary = "T * logsumexp(logits / T) over the K classes"
    defaults = {"temperature": 1.0}
    checks = {"temperature": POSITIVE}
    # OpenOOD v1.5's ebo.yml sweep (at the v1.5 tag; its main branch sweeps only T = 1 since Sep 2023).
    tune_grid = {"temperature": (1.0, 10.0, 100.0, 1000.0)}

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        import torch

        t = self.float_param("temperature")
        logits = class_logits(outputs.logits, ctx.num_classes)
        return (t * torch.logsumexp(logits / t, dim=1)).numpy()
