"""Fine-tuning a loaded backbone: the model's own data config, the backbone learning-rate
multiplier, and head-only training on cached features (`--freeze-backbone`).

With a frozen backbone (eval mode, `requires_grad=False`, normalisation statistics frozen) its
output never changes, so it runs once per split: the embedding and the head then train on the
cached features. Augmentation for cached features: none. The features are those of the suite's
*evaluation* transform, computed once; random augmentation would need the backbone again every
epoch, which is exactly what head-only training avoids (documented in docs/byom.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .classifier import Classifier

DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct")


def model_data_config(suite_config: dict[str, Any], backbone: nn.Module, pretrained: bool,
                      img_size: int | None = None) -> dict[str, Any]:
    """The data config to train and evaluate with.

    A pretrained model brings its own input size, interpolation, crop_pct, mean and std
    (timm's resolve_model_data_config); the suite's data is resized and its channels
    expanded to the model's (grey digits -> 3 identical channels). Otherwise the suite's.
    `img_size` overrides the height and width (timm's --img-size).
    """
    config = dict(suite_config)
    if pretrained:
        from timm.data import resolve_model_data_config

        resolved = resolve_model_data_config(backbone)
        config.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()
                       if k in DATA_CONFIG_KEYS})
    if img_size is not None:
        config["input_size"] = [config["input_size"][0], img_size, img_size]
    config["input_size"] = list(config["input_size"])
    return config


def param_groups(model: Classifier, weight_decay: float, backbone_lr_scale: float, lr: float
                 ) -> list[dict[str, Any]]:
    """timm's decay/no-decay split, with the backbone's groups at lr x backbone_lr_scale."""
    groups: list[dict[str, Any]] = []
    for part, scale in (("backbone", backbone_lr_scale), ("rest", 1.0)):
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad or (name.startswith("backbone.") != (part == "backbone")):
                continue
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
        groups += [{"params": decay, "weight_decay": weight_decay, "lr": lr * scale},
                   {"params": no_decay, "weight_decay": 0.0, "lr": lr * scale}]
    return [g for g in groups if g["params"]] or groups[-1:]


def freeze_backbone(model: Classifier) -> None:
    """No gradients and eval mode for the backbone (its BatchNorm statistics stay as loaded)."""
    model.backbone.requires_grad_(False)
    model.backbone.eval()


def set_train_mode(model: Classifier, frozen: bool) -> None:
    model.train()
    if frozen:
        model.backbone.eval()


@torch.no_grad()
def backbone_features(backbone: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                      dtype: torch.dtype | None = None, num_workers: int = 0) -> TensorDataset:
    """The backbone's output for every sample, once, in eval mode: (features, labels) on the CPU."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            feats.append(backbone(x.to(device)).float().cpu())
        labels.append(y)
    backbone.train(was_training)
    return TensorDataset(torch.cat(feats), torch.cat(labels).long())


class HeadOnly(Classifier):
    """The embedding and head of a classifier, reading cached backbone features."""

    def __init__(self, model: Classifier) -> None:
        super().__init__(nn.Identity(), model.embed, model.head)


def cached_loader(features: TensorDataset, batch_size: int, generator: torch.Generator, drop_last: bool
                  ) -> DataLoader:
    return DataLoader(features, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last)


def features_of(model: Classifier, x: Tensor) -> Tensor:
    return model.backbone(x)


def with_halo_head(model: nn.Module, num_classes: int, embed_dim: int | None = None, loss: str = "halo",
                   freeze_backbone: bool = False, **knobs: Any) -> Classifier:
    """Put a HALO head (or any registered loss's head) on a timm model, for your own training loop.

    The model's classifier is removed (`reset_classifier(0)`: its forward then returns the
    pooled pre-logits features), a linear embedding to `embed_dim` (default `num_classes`)
    and the head follow. The result is a `Classifier`: `model(x)` gives the logits (HALO:
    K+1 columns, the last the abstain class), `model.head.loss(model.forward_features(x), y)`
    the training loss, `model.head.diagnostics()` what is worth logging. `knobs` are the
    loss's knobs (`halo-bench losses`), e.g. label_smoothing=0.1.
    """
    from ..core.errors import HaloBenchError
    from ..losses import get_loss

    if not hasattr(model, "reset_classifier") or not hasattr(model, "num_features"):
        raise HaloBenchError("with_halo_head takes a timm model (one with reset_classifier and num_features).")
    model.reset_classifier(0)
    spec = get_loss(loss)
    dim = num_classes if embed_dim is None else embed_dim
    head = spec.head_class()(in_features=dim, num_classes=num_classes, **vars(spec.make_knobs(knobs)))
    features = getattr(model, "head_hidden_size", None) or model.num_features
    classifier = Classifier(model, nn.Linear(features, dim), head)
    if freeze_backbone:
        freeze(classifier)
    return classifier


def freeze(model: Classifier) -> None:
    """Freeze the backbone as timm does (`timm.utils.model.freeze`: BatchNorm -> FrozenBatchNorm2d)."""
    from timm.utils.model import freeze as timm_freeze

    timm_freeze(model.backbone)
