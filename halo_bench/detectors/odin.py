"""ODIN (Liang et al. 2018): temperature scaling plus a signed-gradient input perturbation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.console import make_progress
from .base import (
    NON_NEGATIVE,
    POSITIVE,
    Detector,
    DetectorContext,
    log_max_softmax,
    register_detector,
)

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    import torch
    from torch.utils.data import Dataset

    from ..features.passes import SplitOutputs


@register_detector
class ODIN(Detector):
    """Both forward passes run in the evaluation's precision (`ctx.amp_dtype` autocast) and
    memory format (`ctx.memory_format`), as the cached pass does; the loss and its input
    gradient are float32. The score is the log of the tempered MSP, in float64 (as `msp`:
    exact where the MSP itself would round to 1)."""

    name = "odin"
    summary = "log max softmax(f(x')/T), x' = x - eps * sign(grad_x CE(f(x)/T, argmax)) / std"
    defaults = {"temperature": 1000.0, "eps": 0.0014}
    checks = {"temperature": POSITIVE, "eps": NON_NEGATIVE}
    tune_grid = {"temperature": (1.0, 10.0, 100.0, 1000.0), "eps": (0.0014, 0.0028)}  # OpenOOD v1.5's odin.yml sweep
    reads = "inputs"
    needs_inputs = True

    def score(self, ctx: DetectorContext, outputs: SplitOutputs, dataset: Dataset) -> np.ndarray:
        import torch

        from ..data.device import eval_batches

        t, eps = self.float_param("temperature"), self.float_param("eps")
        k = ctx.num_classes
        # eps is in [0, 1] pixel units; inputs are normalised per channel, so scale by 1/std.
        std = torch.tensor(ctx.data_config["std"], device=ctx.device).view(1, -1, 1, 1)
        model = ctx.model.eval()
        scores = []
        loader = eval_batches(dataset, ctx.device, ctx.batch_size, ctx.num_workers, ctx.data_config, ctx.pipeline)
        with make_progress() as progress:  # ODIN is most of an evaluation's time: show it
            task = progress.add_task(f"{self.label} {ctx.split}".strip(), total=len(loader), unit="batches")
            for x, _ in loader:
                scores.append(self._score_batch(ctx, model, x, std, t, eps, k))
                progress.advance(task)
        return torch.cat(scores).numpy()

    @staticmethod
    def _score_batch(ctx: DetectorContext, model: torch.nn.Module, x: torch.Tensor, std: torch.Tensor,
                     t: float, eps: float, k: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        amp = {"device_type": ctx.device.type, "dtype": ctx.amp_dtype, "enabled": ctx.amp_dtype is not None}
        fmt = ctx.memory_format or torch.contiguous_format
        x = x.to(ctx.device).contiguous(memory_format=fmt).requires_grad_(True)
        with torch.enable_grad():
            with torch.autocast(**amp):
                out = model(x)
            logits = out.float() / t
            loss = F.cross_entropy(logits, logits[:, :k].argmax(dim=1))
            (grad,) = torch.autograd.grad(loss, x)
        x_hat = (x.detach() - eps * grad.sign() / std).contiguous(memory_format=fmt)
        with torch.no_grad(), torch.autocast(**amp):
            out = model(x_hat)
        return log_max_softmax(out.double() / t, k).cpu()
