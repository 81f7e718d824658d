"""One forward pass over a split: logits, embeddings, penultimate features and labels, kept for
every detector (and cached on disk by `halo_bench.features.cache`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.console import make_progress
from ..data.device import eval_batches
from ..models.classifier import Classifier

FLUSH_EVERY = 32  # batches kept on the device before one copy to the host


@dataclass
class SplitOutputs:
    """What the model says about one split; everything on the CPU, logits in float32.

    `logits` is N x K for a CCE model and N x (K+1) for a HALO model (logits
    relative to the abstain class, then its zero column); `features` is the
    embedding the head consumes; `penultimate` the backbone's pooled features
    before the embedding (None only where a caller built outputs without them).
    """

    logits: Tensor
    features: Tensor
    labels: Tensor
    penultimate: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def forward_pass(model: Classifier, dataset: Any, device: torch.device, batch_size: int = 256,
                 amp_dtype: torch.dtype | None = None, description: str = "forward",
                 num_workers: int = 0, show_progress: bool = True, data_config: dict[str, Any] | None = None,
                 pipeline: str = "loader", memory_format: torch.memory_format | None = None) -> SplitOutputs:
    """Run `model` once over `dataset` and keep its logits, embeddings and penultimate features.

    `dataset` is a Dataset or `DeviceBatches`; with `data_config`, `pipeline` may serve an
    in-memory array from the device (`halo_bench.data.device`). `show_progress=False`
    inside another progress display (older rich cannot nest them).
    """
    model.eval()
    loader = eval_batches(dataset, device, batch_size, num_workers, data_config, pipeline)
    parts: list[list[Tensor]] = [[], [], [], []]  # logits, features, penultimate, labels
    pending: list[list[Tensor]] = [[], [], [], []]  # still on the device: no host sync per batch

    def flush() -> None:
        for kept, new in zip(parts, pending, strict=True):
            if new:
                kept.append(torch.cat(new).cpu())
                new.clear()

    with make_progress(enabled=show_progress) as progress:
        task = progress.add_task(description, total=len(loader), unit="batches")
        for step, (x, y) in enumerate(loader):
            x = x.to(device, non_blocking=True)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out, z, h = model.forward_penultimate(x)
            for bucket, value in zip(pending, (out.float(), z.float(), h.float(), y), strict=True):
                bucket.append(value)
            if (step + 1) % FLUSH_EVERY == 0:  # bounded device memory on large splits
                flush()
            progress.advance(task)
    flush()
    logits, features, penultimate, labels = (torch.cat(p) if p else torch.empty(0) for p in parts)
    return SplitOutputs(logits, features, labels.long(), penultimate)
