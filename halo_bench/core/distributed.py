"""Multi-process training under torchrun: who this process is, and the few collectives
the training loop needs.

    torchrun --nproc-per-node 4 -m halo_bench train resnet18 --suite cifar10 --loss halo

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; each process trains a replica with
DistributedDataParallel on its slice of every global batch (`--batch-size` is the
global batch, so the recipe and the learning-rate schedule are those of one GPU).
NCCL joins CUDA processes, gloo CPU ones (what the tests run). Rank 0 alone writes
the run folder; every rank reads a checkpoint to resume.

What still differs from one GPU: BatchNorm normalises each rank's slice (batch / N
samples) unless `--sync-bn` (SyncBatchNorm, CUDA only) takes its statistics over the
global batch; the device pipeline serves every step the same global batch on any
number of ranks, but the DataLoader path shards its own permutation and augments with
per-rank streams; dropout draws per-rank streams; and gradients are summed in another
order. So a multi-GPU run matches a one-GPU run statistically, like another seed,
never bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from .errors import HaloBenchError

if TYPE_CHECKING:  # torch loads with the work; reading the launch environment needs none
    import torch


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each process's share of the global `--batch-size`, which must divide evenly."""
    if batch_size % world_size:
        raise HaloBenchError(f"--batch-size {batch_size} is the global batch; it must divide by the "
                             f"{world_size} processes.")
    return batch_size // world_size


def launched_ranks() -> Ranks:
    """This process's place in a torchrun launch (a single process: rank 0 of 1)."""
    try:
        return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                     int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise HaloBenchError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them).") from None


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    import torch
    import torch.distributed as dist

    if not ranks.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise HaloBenchError(f"multi-process training runs on CUDA (NCCL) or the CPU (gloo), not {device.type}.")
    if not dist.is_initialized():  # generous: rank 0 alone runs each epoch's monitoring pass
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=60))
    return device


def stop() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(*values: torch.Tensor) -> None:
    """Sum tensors across ranks in place (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for value in values:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """True on every rank if it is True on any."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.bool()


def replica_drift(parameters: list[torch.Tensor]) -> float:
    """The largest |difference| between this rank's tensors and rank 0's (0.0: identical)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in parameters])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    drift = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(drift, op=dist.ReduceOp.MAX)
    return float(drift)


def share_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics).

    DDP broadcasts them at the start of each forward, so after the last step each rank
    still holds the statistics of its own last slice; this closes that gap at an epoch's end.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def check_sync_bn(ranks: Ranks, device: torch.device) -> str | None:
    """Whether `--sync-bn` applies to this launch: None if it does, a note if it has nothing
    to do (one process); a HaloBenchError where it cannot run (checked before the process
    group is joined, so no rank is left waiting)."""
    if not ranks.distributed:
        return ("--sync-bn: one process already normalises BatchNorm over the whole batch; nothing to "
                "synchronise (it matters under torchrun).")
    if device.type != "cuda":
        raise HaloBenchError(f"--sync-bn synchronises BatchNorm across GPUs: torch's SyncBatchNorm runs on CUDA "
                             f"(NCCL) only, and this torchrun job trains on {device.type} (gloo). Drop --sync-bn, "
                             "or train on GPUs.")
    return None


def sync_batchnorm(model: torch.nn.Module) -> None:
    """Replace, in place, every BatchNorm layer inside `model` by a SyncBatchNorm with the same
    parameters and statistics (the state_dict keeps its keys: a checkpoint loads into the plain model)."""
    import torch

    for name, child in model.named_children():
        setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
