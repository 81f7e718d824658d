"""The model after its backbone, as a function of penultimate features.

ReAct, ASH and ViM change or project the backbone's pooled features h and need the
logits of the result. They never re-run the backbone: `tail_logits` runs the
model's own embed + head on (modified) cached features, in float64 on the CPU.
For a CCE model that map is affine (embed then fc); for a HALO model the K logits
relative to the abstain class are affine too, l_k = gamma (2 z.c_k - |c_k|^2) / D - b
with z = embed(h): the quadratic -gamma |z|^2 / D of the distance logits is common to
every class and to the abstain class, so it cancels. `linear_map` returns (W, b) for
either head, and checks the map is affine before a detector relies on it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..core.errors import HaloBenchError
from .base import DetectorContext, no_grad

if TYPE_CHECKING:  # torch loads with the work; `halo-bench detectors` lists without it
    from torch import Tensor, nn


CHUNK = 16384


def _tail(ctx: DetectorContext) -> nn.Module:
    import torch
    from torch import nn

    def copy_tail() -> nn.Module:
        model = ctx.model
        tail = nn.Sequential(copy.deepcopy(model.embed), copy.deepcopy(model.head)).to("cpu", torch.float64)
        return tail.eval().requires_grad_(False)

    return ctx.shared("tail", copy_tail)


@no_grad
def tail_logits(ctx: DetectorContext, h: Tensor) -> Tensor:
    """The K class logits (HALO: relative to the abstain class) of penultimate features `h`, float64."""
    import torch

    tail = _tail(ctx)
    k = ctx.num_classes
    parts = [tail(chunk.double().cpu())[:, :k] for chunk in h.split(CHUNK)]
    return torch.cat(parts) if parts else torch.empty(0, k, dtype=torch.float64)


def linear_map(ctx: DetectorContext, who: str, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(W, b), K x P and K, float64, with class logits = h W^T + b; computed once per context.

    CCE: the composition of embed and fc, W = W_fc W_embed, b = W_fc b_embed + b_fc (for a
    foreign classifier, whose embed is the identity, its own fc). Otherwise read off the tail
    (b = f(0), W = f(e_i) - b) and verified on `probe` (e.g. ID-train features): a head whose
    logits are not affine raises.
    """
    return ctx.shared("linear_map", lambda: _affine_map(ctx, who, probe))


def _linear(layer: nn.Linear) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a linear layer, float64 on the CPU; a layer without bias has b = 0."""
    import torch

    w = layer.weight.detach().double().cpu()
    b = layer.bias.detach().double().cpu() if layer.bias is not None else torch.zeros(len(w), dtype=torch.float64)
    return w, b


@no_grad
def _affine_map(ctx: DetectorContext, who: str, probe: Tensor | None) -> tuple[Tensor, Tensor]:
    import torch
    from torch import nn

    model = ctx.model
    fc = getattr(model.head, "fc", None)
    if not model.abstain and isinstance(fc, nn.Linear) and isinstance(model.embed, (nn.Linear, nn.Identity)):
        w, b = _linear(fc)
        if isinstance(model.embed, nn.Linear):
            w_e, b_e = _linear(model.embed)
            w, b = w @ w_e, w @ b_e + b
    else:
        p = probe.shape[1] if probe is not None else model.embed.in_features
        b = tail_logits(ctx, torch.zeros(1, p, dtype=torch.float64))[0]
        w = (tail_logits(ctx, torch.eye(p, dtype=torch.float64)) - b).T
        check = probe[:256].double() if probe is not None and len(probe) else torch.randn(64, p, dtype=torch.float64)
        got, want = check @ w.T + b, tail_logits(ctx, check)
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max().clamp(min=1.0))):
            raise HaloBenchError(
                f"detector {who!r} needs logits that are an affine function of the penultimate features; "
                f"this model's head ({type(model.head).__name__}) is not. Leave {who!r} out of --detectors."
            )
    return w, b
