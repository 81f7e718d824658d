"""How work runs, as opposed to what it computes: one settings object for train, eval and bench."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(kw_only=True)
class Runtime:
    """Where and how a command runs. None of these change what a run trains or what an
    evaluation measures beyond floating-point noise (the precision is recorded with the
    numbers), so a run may resume under other values, and reports never split runs by them."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    channels_last: bool = True  # channels-last memory format on CUDA
    num_workers: int | None = None  # DataLoader workers (default: 0 for in-memory data, up to 8 for files)
    data_pipeline: str = "auto"  # auto | device | loader (halo_bench.data.base.DATA_PIPELINES)
    data_root: str | None = None  # default: $HALO_BENCH_DATA, else ./data (eval: else the run's)

    def runtime(self) -> Runtime:
        """These settings alone, to hand on to another command's config."""
        return Runtime(**{f.name: getattr(self, f.name) for f in fields(Runtime)})


RUNTIME_FIELDS = frozenset(f.name for f in fields(Runtime))
