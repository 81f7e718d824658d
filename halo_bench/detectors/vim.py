"""ViM, virtual-logit matching (Wang et al. 2022), on penultimate features."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import HaloBenchError
from .base import (
    POSITIVE_INT,
    Detector,
    DetectorContext,
    penultimate,
    register_detector,
)
from .tail import linear_map

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it

    from ..features.passes import SplitOutputs


@register_detector
class ViM(Detector):
    """energy(l) - alpha ||(h - u) P_null||, with l = W h + b the class logits as an affine map
    of the penultimate features h, u = -pinv(W) b, P_null the eigenvectors of the ID-train
    covariance of h - u outside its top `dim`, and alpha = mean max-logit / mean residual
    norm over ID train (OpenOOD's and pytorch-ood's formula; pytorch-ood returns the negation).

    HALO: l are the K logits relative to the abstain class, which are affine in h (see
    `tail`), so ViM is defined as for CCE and its energy term is the `energy` detector.
    The default dim (256, OpenOOD's for 512-d ResNet-18 features) falls back to half the
    feature size on narrower backbones; an explicit dim must be smaller than it.
    """

    name = "vim"
    summary = "energy - alpha * norm of the penultimate residual outside the top-`dim` ID principal subspace"
    defaults = {"dim": 256.0}
    checks = {"dim": POSITIVE_INT}
    # OpenOOD v1.5's vim.yml sweep, made for 512-d (ResNet-18) and 2048-d features: a dim not below
    # the feature count is skipped, so narrower backbones may have no --tune row for vim.
    tune_grid = {"dim": (256.0, 1000.0)}
    reads = "penultimate"
    needs_train = True

    def fit(self, ctx: DetectorContext) -> None:
        import torch

        assert ctx.train is not None
        h = penultimate(ctx.train, self.name)
        p = h.shape[1]
        dim = self.int_param("dim")
        if dim >= p:
            if "dim" in self.explicit:
                raise HaloBenchError(f"vim: dim={dim} must be smaller than the {p} penultimate features; "
                                     f"pass e.g. vim:dim={p // 2}.")
            dim = max(1, p // 2)
        self.dim_used = dim
        w, b = linear_map(ctx, self.name, probe=h)
        self.w, self.b = w, b
        self.u = -(torch.linalg.pinv(w) @ b)
        x = h - self.u
        cov = x.T @ x / len(x)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        self.null_space = vecs[:, : p - dim]
        vlogit = (x @ self.null_space).norm(dim=1)
        logits = h @ w.T + b
        self.alpha = float(logits.max(dim=1).values.mean() / vlogit.mean())

    def score_outputs(self, ctx: DetectorContext, outputs: SplitOutputs) -> np.ndarray:
        import torch

        h = penultimate(outputs, self.name)
        energy = torch.logsumexp(h @ self.w.T + self.b, dim=1)
        vlogit = ((h - self.u) @ self.null_space).norm(dim=1) * self.alpha
        return (energy - vlogit).numpy()

    def settings(self) -> dict:
        out = super().settings()
        if hasattr(self, "dim_used"):
            out["dim_used"] = self.dim_used
            out["alpha"] = self.alpha
        return out
