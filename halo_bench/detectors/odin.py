"""ODIN (Liang et al. 2018): temperature scaling plus a signed-gradient input perturbation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..console import make_progress
from ..features import SplitOutputs
from .base import NON_NEGATIVE, POSITIVE, Detector, DetectorContext, register_detector


@register_detector
class ODIN(Detector):
    name = "odin"
    summary = "max softmax(f(x')/T), x' = x - eps * sign(grad_x CE(f(x)/T, argmax)) / std"
    defaults = {"temperature": 1000.0, "eps": 0.0014}
    checks = {"temperature": POSITIVE, "eps": NON_NEGATIVE}
    tune_grid = {"temperature": (1.0, 10.0, 100.0, 1000.0), "eps": (0.0014, 0.0028)}  # OpenOOD v1.5's sweep
    reads = "inputs"
    needs_inputs = True

    def score(self, ctx: DetectorContext, outputs: SplitOutputs, dataset: Dataset) -> np.ndarray:
        t, eps = self.params["temperature"], self.params["eps"]
        k = ctx.num_classes
        # eps is in [0, 1] pixel units; inputs are normalised per channel, so scale by 1/std.
        std = torch.tensor(ctx.data_config["std"], device=ctx.device).view(1, -1, 1, 1)
        model = ctx.model.eval()
        scores = []
        loader = DataLoader(dataset, batch_size=ctx.batch_size, num_workers=ctx.num_workers)
        with make_progress() as progress:  # ODIN is most of an evaluation's time: show it
            task = progress.add_task("odin", total=len(loader), status="")
            for x, _ in loader:
                scores.append(self._score_batch(ctx, model, x, std, t, eps, k))
                progress.advance(task)
        return torch.cat(scores).numpy()

    @staticmethod
    def _score_batch(ctx: DetectorContext, model: torch.nn.Module, x: torch.Tensor, std: torch.Tensor,
                     t: float, eps: float, k: int) -> torch.Tensor:
        x = x.to(ctx.device).requires_grad_(True)
        with torch.enable_grad():
            logits = model(x).float() / t
            loss = F.cross_entropy(logits, logits[:, :k].argmax(dim=1))
            (grad,) = torch.autograd.grad(loss, x)
        x_hat = x.detach() - eps * grad.sign() / std
        with torch.no_grad():
            probs = (model(x_hat).double() / t).softmax(dim=1)
        return probs[:, :k].max(dim=1).values.cpu()
