"""timm backbone + embedding layer + head: the Classifier every later stage reads, built
from a timm name (randomly initialised, pretrained or from a weights file) or rebuilt
from a checkpoint's metadata."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import HaloBenchError
from ..losses import get_loss
from . import archs  # noqa: F401  (registers the CIFAR variants with timm)


class Classifier(nn.Module):
    """backbone (timm, num_classes=0) -> linear embedding to D -> head."""

    def __init__(self, backbone: nn.Module, embed: nn.Linear, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed = embed
        self.head = head

    @property
    def abstain(self) -> bool:
        return bool(getattr(self.head, "abstain", False))

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The embedding the head consumes (what Mahalanobis and halo_distance read)."""
        return self.embed(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.forward_features(x)
        return self.head(z), z

    def forward_penultimate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, embedding and the backbone's pooled penultimate features (what OpenOOD's
        feature-based postprocessors read), from one pass."""
        h = self.backbone(x)
        z = self.embed(h)
        return self.head(z), z, h

    def logits_from_penultimate(self, h: Tensor) -> Tensor:
        """The logits of given penultimate features: embed then head, no backbone."""
        return self.head(self.embed(h))


def build_model(
    model_name: str,
    loss: str,
    num_classes: int,
    in_chans: int,
    embed_dim: int | None = None,
    seed: int = 0,
    loss_knobs: dict[str, Any] | None = None,
    pretrained: bool = False,
    init_from: str | None = None,
    use_ema: bool = False,
) -> Classifier:
    """Build a randomly initialised classifier with the head of the registered `loss`.

    The backbone and embedding are created from `seed` before the head, so runs of
    different losses and one seed start from identical weights except the head.
    """
    import timm

    from .timm_names import check_model_name

    check_model_name(model_name, pretrained=pretrained)
    spec = get_loss(loss)
    knobs = spec.make_knobs(loss_knobs or {})
    embed_dim = num_classes if embed_dim is None else embed_dim
    torch.manual_seed(seed)
    report, halo_state = None, None
    if pretrained or init_from:  # weights in, timm's way (halo_bench/models/weights.py)
        from .weights import backbone_from_file, create_pretrained

        if init_from:
            backbone, report, halo_state = backbone_from_file(model_name, init_from, in_chans, use_ema)
        else:
            backbone, report = create_pretrained(model_name, in_chans)
    else:
        try:
            backbone = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise HaloBenchError(f"timm could not build {model_name!r}: {exc}") from None
    embed = nn.Linear(backbone.num_features, embed_dim)
    try:
        head = spec.head_class()(in_features=embed_dim, num_classes=num_classes, **vars(knobs))
    except ValueError as exc:  # e.g. HALO with D < 3: a flag the user can change
        raise HaloBenchError(f"cannot build the {spec.label} head: {exc} (see --embed-dim).") from None
    model = Classifier(backbone, embed, head)
    if halo_state is not None and report is not None:
        from .weights import load_halo_parts

        report.head_loaded = load_halo_parts(model, halo_state, loss)
    model.weights_report = report  # type: ignore[assignment]  (None: randomly initialised)
    return model


@torch.no_grad()
def probe_input(model: Classifier, input_size: tuple[int, int, int], arch: str) -> None:
    """Fail early, with a clear message, if `arch` cannot take the suite's input size."""
    was_training = model.training
    try:
        model.eval()(torch.zeros(2, *input_size))
    except MemoryError:
        raise
    except Exception as exc:  # timm raises AssertionError, RuntimeError, ... on a bad size
        raise HaloBenchError(
            f"timm model {arch!r} cannot take inputs of size {tuple(input_size)} "
            f"(channels, height, width): {_first_line(exc)}. "
            "Pick a model that accepts this size, or a suite whose data config fits the model."
        ) from None
    finally:
        model.train(was_training)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def model_from_meta(meta: dict[str, Any]) -> Classifier:
    """Rebuild the architecture a checkpoint describes (weights are loaded separately)."""
    import timm

    spec = meta["model"]
    arch = spec.get("arch", spec["name"])
    backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=spec["in_chans"])
    embed = nn.Linear(backbone.num_features, spec["embed_dim"])
    head_config = {k: v for k, v in spec["head"].items() if k != "type"}
    return Classifier(backbone, embed, get_loss(spec["loss"]).head_class()(**head_config))


def model_meta(model: Classifier, model_name: str, loss: str, in_chans: int,
               arch: str | None = None) -> dict[str, Any]:
    """Plain metadata that rebuilds the architecture: `name` as asked, `arch` as built."""
    return {
        "name": model_name,
        "arch": arch or model_name,
        "loss": loss,
        "in_chans": in_chans,
        "embed_dim": model.embed.out_features,
        "num_features": model.embed.in_features,
        "head": model.head.config(),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
