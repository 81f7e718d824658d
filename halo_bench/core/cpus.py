"""How many CPUs this process may use, for sizing threads and DataLoader workers.

`os.cpu_count()` counts the machine's CPUs; a SLURM job, `taskset` or a container's
cpuset gives the process fewer, and sizing by the machine then oversubscribes them.
"""

from __future__ import annotations

import os

SLURM_CPUS_ENV = "SLURM_CPUS_PER_TASK"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by SLURM's `--cpus-per-task`
    (without task affinity SLURM leaves the mask whole), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        count = os.cpu_count() or 1
    slurm = os.environ.get(SLURM_CPUS_ENV, "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        count = min(count, int(slurm))
    return max(1, count)
