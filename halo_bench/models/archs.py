"""CIFAR-style ResNets registered in timm's own registry.

The ImageNet stem (7x7 stride-2 conv + max-pool) shrinks a 32x32 image to 8x8 before
the first block and costs about 15 points on CIFAR-100. The variants here use the
stem OpenOOD and the HALO reference use: one 3x3 stride-1 conv, no max-pool. Being
registered with timm, `timm.create_model("resnet18_cifar")` and every halo-bench
command accept them like any timm name. Weights are random: nothing to download.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

__all__: list[str] = []

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The suffix a suite's `arch_variant: cifar` appends to a model name.
VARIANT_SUFFIX = {"cifar": "_cifar"}


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "resnet18_cifar.untrained": _cfg(),
    "resnet34_cifar.untrained": _cfg(),
    "resnet50_cifar.untrained": _cfg(),
})


def _cifar_resnet(variant: str, block: type[nn.Module], layers: tuple[int, ...], **kwargs: Any) -> ResNet:
    kwargs.pop("pretrained", None)  # random init only
    model = build_model_with_cfg(ResNet, variant, False, block=block, layers=layers, **kwargs)
    in_chans = kwargs.get("in_chans", 3)
    stem_out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, stem_out, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    return _cifar_resnet("resnet18_cifar", BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    return _cifar_resnet("resnet34_cifar", BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    return _cifar_resnet("resnet50_cifar", Bottleneck, (3, 4, 6, 3), **kwargs)


def resolve_arch(model_name: str, variant: str | None) -> str:
    """The timm name to build: `<name>_<variant>` when the suite asks for a registered variant."""
    import timm

    if variant is None:
        return model_name
    candidate = model_name + VARIANT_SUFFIX.get(variant, f"_{variant}")
    return candidate if timm.is_model(candidate) else model_name
