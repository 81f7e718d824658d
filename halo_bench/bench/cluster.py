"""Cluster configuration for `bench --launcher local|slurm`: resources per job from the
`--cluster-config` YAML and flags (flags win), validated, and the submitit executor that
submits the jobs (one SLURM job array, or background processes here).

submitit is an optional dependency (`pip install "halo-bench[cluster]"`), imported
only when a job is submitted or inspected."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import HaloBenchError

if TYPE_CHECKING:  # evaluate imports torch; the CLI checks everything before torch loads
    pass


JOBS_DIR = "jobs"  # under --out: each job's logs and submitit's pickles, jobs.json, slot locks


def jobs_folder(out: str | os.PathLike[str]) -> Path:
    return Path(out).absolute() / JOBS_DIR


LAUNCHERS = ("inline", "local", "slurm")


INSTALL_HINT = 'pip install "halo-bench[cluster]" (or pip install submitit)'


DEFAULT_TIME_MIN = 24 * 60  # SLURM


LOCAL_NO_LIMIT_MIN = 366 * 24 * 60  # local jobs: in effect none (a job waiting for a slot counts)


@dataclass
class ClusterConfig:
    """Resources for each job, from `--cluster-config` YAML and flags (flags win)."""

    partition: str | None = None
    time: int | None = None  # minutes; default: 24 h on SLURM, none locally (a waiting job must not time out)
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    max_parallel: int | None = None  # default: 1 local, every job at once on SLURM
    sbatch_lines: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    max_requeues: int = 3  # time-outs after which submitit stops requeuing a job
    unknown_limit: float | None = None  # minutes a SLURM job sacct cannot report on counts as running (default: time)

    def parallel(self, launcher: str, n_jobs: int) -> int:
        if self.max_parallel is not None:
            return self.max_parallel
        return 1 if launcher == "local" else max(1, n_jobs)

    def unknown_limit_s(self) -> float:
        minutes = self.unknown_limit if self.unknown_limit is not None else self.time or DEFAULT_TIME_MIN
        return 60.0 * minutes


def parse_time(value: Any, where: str = "--time") -> int:
    """SLURM-style time limit -> whole minutes: `90` (minutes), `H:MM:SS`, `D-H:MM:SS` or `D-H`."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})|(\d+)-(\d+)|(\d+)", text)
    if isinstance(value, bool) or not match:
        raise HaloBenchError(f"{where} takes minutes (90), H:MM:SS (4:00:00) or D-H:MM:SS (1-12:00:00), "
                             f"got {value!r}.")
    days, hours, minutes, seconds, d2, h2, only = match.groups()
    if only is not None:
        total = int(only) * 60
    elif d2 is not None:
        total = (int(d2) * 24 + int(h2)) * 3600
    else:
        total = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
    if total <= 0:
        raise HaloBenchError(f"{where} must be positive, got {value!r}.")
    return -(-total // 60)


def _sbatch_option(line: Any, where: str) -> tuple[str, Any]:
    """`--constraint=a100`, `constraint=a100`, `#SBATCH --exclusive` -> (key, value or True)."""
    text = str(line).strip()
    text = re.sub(r"^#SBATCH\s+", "", text)
    match = re.fullmatch(r"(?:--)?([A-Za-z][A-Za-z0-9-]*)(?:[= ]\s*(\S.*))?", text)
    if not isinstance(line, str) or not match:
        raise HaloBenchError(f"{where}: expected an sbatch option such as --constraint=a100, got {line!r}.")
    key, value = match.groups()
    if key.replace("_", "-") in {"array", "output", "error", "signal", "open-mode", "job-name"}:
        raise HaloBenchError(f"{where}: --{key} is set by halo-bench itself and cannot be overridden.")
    return key, True if value is None else value


_CLUSTER_KEYS = {f.name for f in fields(ClusterConfig)}


_FLAGS = {"sbatch_lines": "--sbatch-line", "time": "--time"}


def cluster_config(path: str | os.PathLike[str] | None = None, **flags: Any) -> ClusterConfig:
    """Read and validate the YAML file (if any), then apply the flags that were given (not None)."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, for the error message
    if path is not None:
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise HaloBenchError(f"--cluster-config {path} does not exist.") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise HaloBenchError(f"--cluster-config {path}: not readable YAML ({exc}).") from None
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise HaloBenchError(f"{path}: expected a mapping of settings (partition: gpu, time: 4:00:00, ...).")
        for key, value in doc.items():
            name = str(key).replace("-", "_")
            if name not in _CLUSTER_KEYS:
                close = difflib.get_close_matches(name, sorted(_CLUSTER_KEYS), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise HaloBenchError(f"{path}: unknown setting {key!r}.{hint} Known: {', '.join(sorted(_CLUSTER_KEYS))}.")
            values[name], origin[name] = value, f"{path}: {key}"
    for name, value in flags.items():
        if name not in _CLUSTER_KEYS:
            raise TypeError(f"unknown cluster setting {name!r}")
        if value is not None and not (isinstance(value, list) and not value):
            values[name], origin[name] = value, _FLAGS.get(name, "--" + name.replace("_", "-"))
    return _validated(values, origin)


def _validated(values: dict[str, Any], origin: dict[str, str]) -> ClusterConfig:
    def integer(name: str, minimum: int, default: int | None = None) -> int | None:
        value = values.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise HaloBenchError(f"{origin[name]} must be an integer >= {minimum}, got {value!r}.")
        return value

    def text(name: str) -> str | None:
        value = values.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise HaloBenchError(f"{origin[name]} must be a non-empty string, got {value!r}.")
        return value

    def lines(name: str) -> list[str]:
        value = values.get(name) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HaloBenchError(f"{origin[name]} must be a list of strings, got {value!r}.")
        return list(value)

    mem = values.get("mem_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0):
        raise HaloBenchError(f"{origin['mem_gb']} must be a positive number of GB, got {mem!r}.")
    unknown = values.get("unknown_limit")
    if isinstance(unknown, str):
        unknown = parse_time(unknown, origin["unknown_limit"])
    elif unknown is not None and (isinstance(unknown, bool) or not isinstance(unknown, (int, float)) or unknown < 0):
        raise HaloBenchError(f"{origin['unknown_limit']} must be minutes >= 0 or H:MM:SS, got {unknown!r}.")
    cfg = ClusterConfig(
        partition=text("partition"),
        time=parse_time(values["time"], origin["time"]) if values.get("time") is not None else None,
        gpus_per_job=integer("gpus_per_job", 0, 1),
        cpus_per_job=integer("cpus_per_job", 1),
        mem_gb=float(mem) if mem is not None else None,
        account=text("account"),
        max_parallel=integer("max_parallel", 1),
        sbatch_lines=lines("sbatch_lines"),
        setup=lines("setup"),
        max_requeues=integer("max_requeues", 0, 3),
        unknown_limit=float(unknown) if unknown is not None else None,
    )
    for line in cfg.sbatch_lines:
        _sbatch_option(line, origin["sbatch_lines"])
    if cfg.gpus_per_job > 1:
        raise HaloBenchError(
            f"{origin['gpus_per_job']} {cfg.gpus_per_job}: a launcher job is one training process, so it would "
            "hold GPUs it cannot use. Use 1: each run gets its own GPU and the runs go in parallel as array "
            "tasks (--max-parallel). To train one run on several GPUs, start it with torchrun "
            "(docs/cluster-gpu.md)."
        )
    return cfg


def _require_submitit(launcher: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise HaloBenchError(f"--launcher {launcher} needs submitit, which is not installed: {INSTALL_HINT}.") from None
    return submitit


@contextlib.contextmanager
def _job_environment() -> Iterator[None]:
    """Environment the jobs inherit: this halo_bench importable, no progress bars in log files."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HALO_BENCH_PROGRESS")}
    package_parent = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in paths if p != package_parent])
    os.environ["HALO_BENCH_PROGRESS"] = "0"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_executor(launcher: str, out: str | os.PathLike[str], cluster: ClusterConfig, n_jobs: int) -> Any:
    """A submitit executor writing each job's logs to <out>/jobs/<job id>_0_log.{out,err}."""
    submitit = _require_submitit(launcher)
    folder = jobs_folder(out)
    parallel = cluster.parallel(launcher, n_jobs)
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cluster.max_requeues)
        # Every slot's GPUs are visible to each job, which narrows them to its slot's group.
        gpus = cluster.gpus_per_job * parallel
        local: dict[str, Any] = {"timeout_min": cluster.time or LOCAL_NO_LIMIT_MIN, "setup": list(cluster.setup)}
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if visible and all(d.isdigit() for d in visible):  # keep the user's own restriction
            local["visible_gpus"] = [int(d) for d in visible]
            gpus = min(gpus, len(visible))
        executor.update_parameters(gpus_per_node=gpus, **local)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cluster.max_requeues)
    except RuntimeError as exc:
        raise HaloBenchError(f"--launcher slurm: {exc} (no `srun` on PATH; run bench on a SLURM login "
                             "node, or use --launcher local).") from None
    params: dict[str, Any] = {
        "job_name": f"halo-bench-{Path(out).absolute().name}",
        "time": cluster.time or DEFAULT_TIME_MIN,
        "nodes": 1,
        "ntasks_per_node": 1,
        "array_parallelism": parallel,
        "signal_delay_s": 120,
    }
    optional = {"partition": cluster.partition, "account": cluster.account,
                "cpus_per_task": cluster.cpus_per_job,
                "gpus_per_node": cluster.gpus_per_job or None,
                "mem": f"{int(cluster.mem_gb * 1024)}MB" if cluster.mem_gb else None,
                "setup": list(cluster.setup) or None,
                "additional_parameters": dict(_sbatch_option(line, "--sbatch-line") for line in cluster.sbatch_lines)
                or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    return executor
