"""One forward pass over a split: logits, embeddings, penultimate features and labels, kept for
every detector (and cached on disk by `halo_bench.cache`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .console import make_progress
from .models import Classifier


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
def forward_pass(model: Classifier, dataset: Dataset, device: torch.device, batch_size: int = 256,
                 amp_dtype: torch.dtype | None = None, description: str = "forward",
                 num_workers: int = 0, show_progress: bool = True) -> SplitOutputs:
    """Run `model` once over `dataset` and keep its logits, embeddings and penultimate features.

    `show_progress=False` inside another progress display (older rich cannot nest them).
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    logits, features, penultimate, labels = [], [], [], []
    with make_progress(enabled=show_progress) as progress:
        task = progress.add_task(description, total=len(loader), status="")
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out, z, h = model.forward_penultimate(x)
            logits.append(out.float().cpu())
            features.append(z.float().cpu())
            penultimate.append(h.float().cpu())
            labels.append(y.cpu())
            progress.advance(task)
    return SplitOutputs(_cat(logits), _cat(features), _cat(labels).long(), _cat(penultimate))


def _cat(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts) if parts else torch.empty(0)
