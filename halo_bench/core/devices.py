"""Where and in what precision the work runs: device choice, autocast dtype, environment."""

from __future__ import annotations

from typing import Any

import torch

from .errors import HaloBenchError
from .io import package_versions


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HaloBenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HaloBenchError(f"--device {name} was asked for, but this torch sees no CUDA GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HaloBenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) visible.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HaloBenchError("--device mps was asked for, but this torch sees no Apple GPU.")
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 autocast on GPUs that have it, fp16 on older ones, none on the CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def channels_last_format(device: torch.device, enabled: bool) -> torch.memory_format | None:
    """channels-last for CUDA convolutions when enabled; None (leave tensors as they are) elsewhere."""
    return torch.channels_last if enabled and device.type == "cuda" else None


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).replace("torch.", "") if dtype else None


def environment(device: torch.device) -> dict[str, Any]:
    """Package versions plus what else changes the numbers: threads, device, GPU name."""
    env: dict[str, Any] = {**package_versions(), "torch_threads": torch.get_num_threads(),
                           "torch_interop_threads": torch.get_num_interop_threads(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
