"""Temperature scaling (Guo et al. 2017), the one-scalar post-hoc calibration baseline.

The temperature is fitted on an ID-validation split, never on test data, by minimising
the NLL of softmax(logits / T). For a HALO model the logits are its K+1 columns (K logits
relative to the abstain class, then the zero abstain column, which stays zero), so the
scaled model is the same K+1-way softmax the ID metrics read. The NLL is convex in 1/T,
so a bounded 1-D search over log(1/T) finds the global minimum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from ..core.errors import HaloBenchError
from . import metrics

LOG_BETA_BOUNDS = (-math.log(1000.0), math.log(1000.0))  # T in [1e-3, 1e3]
CALIBRATION_METRICS = ("ece", "nll", "brier")


def nll_at(logits: Tensor, labels: Tensor, beta: float) -> float:
    """Mean -log softmax(beta * logits)[y], float64."""
    log_p = torch.log_softmax(logits.double() * beta, dim=1)
    return float(-log_p.gather(1, labels.long()[:, None]).mean())


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on (logits, labels)."""
    if len(labels) == 0:
        raise HaloBenchError("temperature scaling needs a non-empty ID-validation split.")
    result = minimize_scalar(lambda lb: nll_at(logits, labels, math.exp(lb)), bounds=LOG_BETA_BOUNDS,
                             method="bounded", options={"xatol": 1e-7})
    return 1.0 / math.exp(float(result.x))


def temperature_scaled_metrics(val_logits: Tensor, val_labels: Tensor, test_logits: Tensor,
                               test_labels: Tensor, num_classes: int) -> dict[str, Any]:
    """`ts_temperature` fitted on validation, and ECE / NLL / Brier of the scaled test softmax."""
    t = fit_temperature(val_logits, val_labels)
    return {"ts_temperature": t, **scaled_metrics(t, test_logits, test_labels, num_classes)}


def scaled_metrics(temperature: float, logits: Tensor, labels: Tensor, num_classes: int,
                   keys: tuple[str, ...] = CALIBRATION_METRICS) -> dict[str, float]:
    """`ts_<key>` of the ID metrics of softmax(logits / temperature), for each of `keys`."""
    probs = (logits.double() / temperature).softmax(dim=1).numpy()
    scaled = metrics.id_metrics(probs, labels.numpy().astype(np.int64), num_classes)
    return {f"ts_{m}": scaled[m] for m in keys}
