"""Deep nearest neighbours (Sun et al. 2022) on L2-normalised penultimate features."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.console import console
from ..core.errors import HaloBenchError
from .base import (
    POSITIVE_INT,
    Detector,
    DetectorContext,
    no_grad,
    penultimate,
    register_detector,
)

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    from torch import Tensor

    from ..features.passes import SplitOutputs

# Query rows per chunk: chunk x N similarities at a time, never an N x N matrix.
MAX_CHUNK_ENTRIES = 1 << 24


def _normalise(h: Tensor) -> Tensor:
    return h / h.norm(dim=1, keepdim=True).clamp(min=1e-12)


@register_detector
class KNN(Detector):
    """-||q - b_(k)||, the distance from the normalised query to its k-th nearest normalised
    ID-train feature (pytorch-ood's `KNN`: the same distance, with the OOD sign). OpenOOD
    scores the negated *squared* distance (faiss's L2): the same order, so the same metrics.
    Exact brute force in float32 on the evaluation device, in chunks of queries.

    k must be below the number N of ID-train samples: an explicit k >= N is an error, the
    default k on a smaller split (e.g. `eval --limit`) is clamped to N - 1 with a warning
    and the value used is recorded in `settings()` as `k_used`.
    """

    name = "knn"
    summary = "-distance to the k-th nearest ID-train neighbour, L2-normalised penultimate features"
    defaults = {"k": 50.0}
    checks = {"k": POSITIVE_INT}
    tune_grid = {"k": (50.0, 100.0, 200.0, 500.0, 1000.0)}  # OpenOOD v1.5's knn.yml sweep
    reads = "penultimate"
    needs_train = True

    def check_fit_size(self, n: int) -> None:
        # The N-th neighbour is the farthest train sample and beyond it there is none: a k that
        # reaches N no longer measures a neighbourhood, so it must never run silently.
        k = self.int_param("k")
        if n < 2:
            raise HaloBenchError(f"knn needs at least 2 ID-train samples, and the split has {n}; "
                                 "leave knn out of --detectors.")
        if k >= n and "k" in self.explicit:
            raise HaloBenchError(f"knn: k={k} exceeds the neighbours that the {n} ID-train samples give "
                                 f"(k must be below {n}); pass a smaller k, e.g. --detectors knn:k={n - 1}.")

    def fit(self, ctx: DetectorContext) -> None:
        assert ctx.train is not None
        bank = _normalise(penultimate(ctx.train, self.name)).float()
        k, n = self.int_param("k"), len(bank)
        self.check_fit_size(n)
        if k >= n:
            console.print(f"[yellow]warning:[/] knn: the default k={k} exceeds the neighbours that the {n} "
                          f"ID-train samples give (e.g. under --limit); using k={n - 1}, recorded as k_used.")
            k = n - 1
        self.k_used = k
        self.bank = bank.to(ctx.device)
        self.bank_sq = self.bank.pow(2).sum(dim=1)

    @no_grad
    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        import torch

        k = self.k_used
        queries = _normalise(penultimate(outputs, self.name)).float()
        chunk = max(1, MAX_CHUNK_ENTRIES // max(1, len(self.bank)))
        out = []
        for q in queries.split(chunk):
            q = q.to(ctx.device)
            # |q - b|^2 in full: a zero feature stays zero after normalising, so |b| is not always 1.
            sq = q.pow(2).sum(dim=1, keepdim=True) + self.bank_sq[None] - 2.0 * (q @ self.bank.T)
            kth = sq.topk(k, dim=1, largest=False).values[:, -1]
            out.append(kth.clamp(min=0).sqrt().double().cpu())
        dist = torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
        return (-dist).numpy()

    def settings(self) -> dict:
        out = super().settings()
        if hasattr(self, "k_used"):
            out["k_used"] = self.k_used
        return out
