"""`bench --launcher local|slurm`: the bench's runs as submitit jobs, one per (suite, loss, seed).

Each job trains (or resumes) one run and evaluates it, writing the usual run folder
under the shared `--out`. The jobs go out as one job array (SLURM) or as background
processes of this machine (local), at most `max_parallel` at a time. What was
submitted is kept in `<out>/jobs/jobs.json`, so running the same `bench` again can
tell finished, running, failed and missing runs apart: it skips the finished and
running ones and resubmits the others, which resume from their last checkpoint.

Whether a SLURM job still runs is sacct's to say. When sacct cannot (accounting off, the
job aged out of it, a failing call: submitit then reports UNKNOWN), the job's logs are
read for SLURM's and submitit's end lines (cancelled, time limit, out of memory, task
exit); failing those, the job counts as running for `unknown_limit` (default: its time
limit) from when its state was first unknown, kept in jobs.json across benches, and then
as failed: listed with its log and resubmitted.

A job that is preempted or reaches its time limit gets submitit's signal, calls
`RunJob.checkpoint` and is requeued; `train()` then resumes from the run's ckpt.pt
(written after every epoch), so at most the epoch in progress is trained again.

submitit is an optional dependency (`pip install "halo-bench[cluster]"`), imported
only when a job is submitted or inspected.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.console import console, make_progress
from ..core.cpus import usable_cpus
from ..core.errors import HaloBenchError, unknown_name
from ..core.io import atomic_write_json, sha256_file, utc_now
from ..train.config import TrainConfig, saved_identity
from .cluster import (
    DEFAULT_TIME_MIN,
    LAUNCHERS,
    ClusterConfig,
    _job_environment,
    _require_submitit,
    cluster_config,
    jobs_folder,
    make_executor,
)
from .sweep import BenchConfig

if TYPE_CHECKING:  # evaluate imports torch; the CLI checks everything before torch loads
    from ..evaluate.run import EvalConfig


JOBS_FILE = "jobs.json"


JOBS_SCHEMA = "halo-bench/jobs"


# sacct states of a job that may still run (a requeued job shows its latest attempt). Not UNKNOWN:
# submitit's word for "sacct said nothing", which a dead job says forever (JobStates).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "READY"}


UNKNOWN = "UNKNOWN"


JOB_STARTED = "job started (slot"  # run_job's first line, in the job's stderr, at every attempt


REQUEUED = "preempted or timed out; requeued"  # RunJob.checkpoint's


# Log lines that end a job's attempt (slurmstepd, srun, submitit), and lines of an attempt that
# goes on or starts again after them (a requeue); the last of either in a log tells which.
LOG_ENDS = re.compile(r"CANCELLED AT|oom[-_]kill event|srun: error: .*task \d+: |Job completed successfully|"
                      r"Submitted job triggered an exception|Job not requeued because")


LOG_GOES_ON = ("DUE TO JOB REQUEUE", "Requeued job", "Exiting gracefully after preemption/timeout",
               "- Starting with", JOB_STARTED, REQUEUED)


LOG_TAIL_BYTES = 1 << 20


ERROR_LINES = 5


@dataclass
class RunJob:
    """One (suite, loss, seed) run: train (or resume) it, then evaluate it.

    A plain-data callable, pickled by submitit. `checkpoint` is submitit's hook for a
    preempted or timed-out job (as on `submitit.helpers.Checkpointable`): it requeues
    the same call, and `train()` resumes from the run's last epoch checkpoint.
    """

    train_config: TrainConfig
    eval_config: EvalConfig
    registry: str | None = None
    threads: int | None = None  # torch CPU threads (default: torch's, at most the CPUs the job may use)
    slots: str | None = None  # local launcher: folder of lock files limiting concurrent jobs
    max_parallel: int = 1
    gpus_per_job: int = 0

    def __call__(self) -> dict[str, Any]:
        return run_job(self)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        console.print(f"{self.train_config.run_name}: {REQUEUED}, it resumes from its last checkpoint.")
        return DelayedSubmission(self)


def export_distributed_env() -> dict[str, str]:
    """Set MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK from submitit's job environment.

    Returns the variables set ({} outside a submitit job). CUDA_VISIBLE_DEVICES is left as
    the scheduler set it.
    """
    try:
        from submitit.helpers import TorchDistributedEnvironment

        dist = TorchDistributedEnvironment()
    except Exception:  # not inside a submitit job
        return {}
    dist.export(set_cuda_visible_devices=False, overwrite=True)
    return {k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}


@contextlib.contextmanager
def _slot(folder: str | None, count: int, poll_s: float = 1.0) -> Iterator[int]:
    """Hold one of `count` lock files under `folder` (released when the process ends, however)."""
    if folder is None:
        yield 0
        return
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    while True:
        for k in range(count):
            handle = open(Path(folder) / f"slot-{k}.lock", "a+")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                yield k
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_s)


def run_job(job: RunJob) -> dict[str, Any]:
    import torch

    from ..data import load_registry
    from ..evaluate.run import evaluate, summarize
    from ..train.loop import train

    dist = export_distributed_env()
    rank = int(os.environ.get("RANK", "0"))
    name = job.train_config.run_name
    if rank != 0:  # one process per job (submission refuses --gpus-per-job > 1): only rank 0 trains
        return {"run": name, "rank": rank, "skipped": True}
    # ... and trains alone: without this, train() would read WORLD_SIZE > 1 and wait for the others.
    os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
    # torch's default counts the node's cores; a job may hold fewer (SLURM's --cpus-per-task).
    torch.set_num_threads(job.threads or min(torch.get_num_threads(), usable_cpus()))
    with _slot(job.slots, job.max_parallel) as slot:
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
        if job.slots and job.gpus_per_job and len(visible) >= (slot + 1) * job.gpus_per_job:
            # local launcher: slot k gets the k-th group of GPUs (CUDA is not initialised yet)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible[slot * job.gpus_per_job:(slot + 1) * job.gpus_per_job])
        console.print(f"{name}: {JOB_STARTED} {slot}, {torch.get_num_threads()} threads, "
                      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}, "
                      f"{dist or 'no submitit environment'})", markup=False)
        registry = load_registry(job.registry)
        trained = train(job.train_config, registry)
        results, path = evaluate(job.eval_config, registry)
        console.print(summarize(results))
    return {"run": name, "results": str(path), "epochs_run": trained.epochs_run, "distributed": dist}


@dataclass
class RunPlan:
    name: str
    train_config: TrainConfig  # as submitted (unset recipe fields stay None)
    resolved: TrainConfig
    run_dir: Path
    state: str = "missing"  # finished | running | failed | missing
    record: dict[str, Any] | None = None
    detail: str = ""  # failed: the error's last lines; missing: how far a checkpoint got; running: why, if unsure
    data: str = ""  # Registry.fingerprint of the suite's datasets, which its evaluation reads


def read_jobs(out: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    import json

    path = jobs_folder(out) / JOBS_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HaloBenchError(f"{path}: not readable ({exc}); delete it to forget the submitted jobs.") from None
    runs = doc.get("runs") if isinstance(doc, dict) and doc.get("schema") == JOBS_SCHEMA else None
    keys = {"launcher", "job_id", "stderr", "result"}
    if not isinstance(runs, dict) or not all(isinstance(r, dict) and keys <= set(r) for r in runs.values()):
        raise HaloBenchError(f"{path}: not a halo-bench jobs file; delete it to forget the submitted jobs.")
    return runs


@contextlib.contextmanager
def _editing_jobs(out: str | os.PathLike[str]) -> Iterator[dict[str, dict[str, Any]]]:
    """jobs.json's records, to change in place and written back, under a lock (two benches may
    share an --out)."""
    import fcntl

    folder = jobs_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".jobs.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = read_jobs(out)
        yield runs
        atomic_write_json(folder / JOBS_FILE, {"schema": JOBS_SCHEMA, "version": 1, "runs": runs})


def _record_jobs(out: str | os.PathLike[str], records: dict[str, dict[str, Any]]) -> None:
    """Merge `records` (run name -> its job's record) into jobs.json."""
    with _editing_jobs(out) as runs:
        runs.update(records)


def _update_jobs(out: str | os.PathLike[str], changes: dict[str, dict[str, Any]]) -> None:
    """Set fields of the records of these job ids (None removes one); a run resubmitted
    meanwhile has another job id and is left alone."""
    with _editing_jobs(out) as runs:
        for record in runs.values():
            for key, value in changes.get(record["job_id"], {}).items():
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = value


def plan_runs(cfg: BenchConfig, registry: Any) -> list[RunPlan]:
    """The bench's (seed, loss) runs, as the inline bench trains them, with an absolute --out."""
    suite = registry.suite(cfg.suite)
    data = registry.fingerprint([suite.id, *(key for _, key in registry.resolve_ood(suite, None).values())])
    plans = []
    for tcfg in cfg.train_configs():
        tcfg = replace(tcfg, out=str(Path(tcfg.out).absolute()))
        plans.append(RunPlan(tcfg.run_name, tcfg, tcfg.resolved(registry), Path(tcfg.out) / tcfg.run_name,
                             data=data))
    return plans


def finished_results(plan: RunPlan, detectors: list[str] | None) -> Path | None:
    """results.json if it evaluates this run's complete checkpoint, as configured, on the data
    `plan.data` names (Registry.fingerprint; an evaluation of other data already there makes
    the bench's own evaluation its data variant, beside it); else None."""
    import json

    from ..results import data_variant, evaluation_name, results_file

    name = evaluation_name(detectors)
    path, ckpt = plan.run_dir / results_file(name), plan.run_dir / "ckpt.pt"
    if not path.is_file() or not ckpt.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if plan.data and doc.get("data_fingerprint") not in (None, plan.data):
            path = plan.run_dir / results_file(data_variant(name, plan.data))
            doc = json.loads(path.read_text())
        checkpoint = doc["checkpoint"]
        same = (checkpoint.get("complete") is True and not doc.get("partial")
                and saved_identity(doc["train_config"]) == plan.resolved.identity()
                and doc["eval_config"].get("detectors") == detectors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return path if same and checkpoint.get("sha256") == sha256_file(ckpt) else None


def _check_same_config(plan: RunPlan) -> str:
    """Refuse a run folder trained with another config, as train() would; say how far it got."""
    ckpt = plan.run_dir / "ckpt.pt"
    if not ckpt.is_file():
        return ""
    from ..train.loop import find_resumable

    state, _ = find_resumable(plan.resolved, ckpt, force=False)
    return f"checkpoint at epoch {(state or {}).get('meta', {}).get('epochs_done', 0)}/{plan.resolved.epochs}"


def _local_alive(job_id: str) -> bool:
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():  # Linux: not a zombie, and still a submitit controller (pid reuse)
        try:
            return b"submitit" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def log_ending(record: dict[str, Any]) -> str | None:
    """The line of a job's logs that ended its latest attempt (cancelled, time limit, out of
    memory, a task's exit, submitit's end), or None: no such line, or a requeue or a new
    attempt after it."""
    for key in ("stderr", "stdout"):
        try:
            with open(record.get(key) or "", "rb") as handle:  # a requeued job appends: its tail is enough
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:  # no log yet: never started, or only pending
            continue
        ending = None
        for line in text.splitlines():
            if any(mark in line for mark in LOG_GOES_ON):
                ending = None
            elif LOG_ENDS.search(line):
                ending = line.strip()
        if ending:
            return ending
    return None


class JobStates:
    """Whether recorded jobs may still run: local controller processes, or sacct for SLURM.

    A SLURM job sacct says nothing about (UNKNOWN) runs until its log shows its end, or for
    its record's `unknown_limit_s` from when it was first seen unknown; `changes` holds the
    record fields that time needs kept (`save` writes them to jobs.json), `notes` what to
    tell the user about each such job.
    """

    def __init__(self, records: list[dict[str, Any]], live: dict[str, Any] | None = None) -> None:
        self.live = live or {}  # job id -> submitit Job submitted by this process (reaps its process)
        self.slurm: dict[str, str] = {}
        self.changes: dict[str, dict[str, Any]] = {}  # job id -> record fields to set (None: remove)
        self.notes: dict[str, str] = {}
        self.endings: dict[str, str] = {}  # job id -> the log line that ended it, where sacct could not say
        self.now = time.time()
        slurm_ids = [r["job_id"] for r in records if r.get("launcher") == "slurm"]
        if slurm_ids:
            _require_submitit("slurm")
            from submitit.slurm.slurm import SlurmInfoWatcher

            # A watcher of our own: submitit's shared one keeps the last answer when sacct fails.
            watcher = SlurmInfoWatcher()
            for job_id in slurm_ids:
                watcher.register_job(job_id)
            watcher.update()
            self.slurm = {job_id: watcher.get_state(job_id, mode="cache") for job_id in slurm_ids}

    def active(self, record: dict[str, Any]) -> bool:
        job = self.live.get(record["job_id"])
        if job is not None and record.get("launcher") == "local":
            return job._process is not None and job._process.poll() is None
        if record.get("launcher") == "slurm":
            return self._slurm_active(record)
        return _local_alive(record["job_id"])

    def _slurm_active(self, record: dict[str, Any]) -> bool:
        job_id = record["job_id"]
        state = (self.slurm.get(job_id) or UNKNOWN).split()[0].upper()
        if state != UNKNOWN:
            if record.get("unknown_since") is not None:
                self._change(record, unknown_since=None)
            return state in SLURM_ACTIVE and not Path(record["result"]).exists()
        if Path(record["result"]).exists():
            return False
        ending = log_ending(record)
        if ending is not None:
            self.notes[job_id] = "sacct reports no state for it, and its log shows it ended:"
            self.endings[job_id] = ending
            return False
        since = record.get("unknown_since")
        if since is None:
            since = self.now
            self._change(record, unknown_since=since)
        limit = float(record.get("unknown_limit_s", DEFAULT_TIME_MIN * 60))
        if self.now - since > limit:
            self.notes[job_id] = (f"sacct has reported no state for it since {_clock(since)} and its log shows no "
                                  f"end; past the {limit / 60:g} min unknown_limit it counts as dead.")
            return False
        self.notes[job_id] = (f"sacct has reported no state for it since {_clock(since)}: it counts as running "
                              f"until {_clock(since + limit)}, unless its log shows it ended.")
        return True

    def _change(self, record: dict[str, Any], **fields: Any) -> None:
        record.update(fields)
        self.changes.setdefault(record["job_id"], {}).update(fields)

    def save(self, out: str | os.PathLike[str]) -> None:
        """Keep the changed record fields in jobs.json (for the next bench) and forget them here."""
        if self.changes:
            _update_jobs(out, self.changes)
            self.changes = {}


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


def _result(record: dict[str, Any]) -> tuple[str, Any]:
    """submitit's (outcome, value) for a job that ended normally; ("none", None) if it wrote none."""
    result = Path(record["result"])
    if not result.is_file():
        return "none", None
    try:
        import pickle

        with result.open("rb") as handle:  # our own job's file: a (str, str | dict) tuple
            outcome, value = pickle.load(handle)
        return str(outcome), value
    except Exception:  # half-written or foreign
        return "none", None


def _outcome(record: dict[str, Any]) -> str:
    return _result(record)[0]


def failure_detail(record: dict[str, Any], lines: int = ERROR_LINES) -> str:
    """The failed job's last error lines, from submitit's result file or else its stderr log."""
    outcome, value = _result(record)
    text = str(value) if outcome == "error" else ""
    if not text:
        stderr = Path(record["stderr"])
        text = stderr.read_text(errors="replace") if stderr.is_file() else ""
        if not text:
            return "no log: the job was killed before it started, or never ran."
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)


def classify(plans: list[RunPlan], cfg: BenchConfig, states: JobStates) -> None:
    """Set each plan's state; a run already seen finished (while following) is not checked again."""
    records = read_jobs(cfg.out)
    for plan in plans:
        if plan.state == "finished" and records.get(plan.name) == plan.record:
            continue
        plan.record = records.get(plan.name)
        plan.detail = ""
        if plan.record is not None and states.active(plan.record):
            plan.state = "running"
            plan.detail = states.notes.get(plan.record["job_id"], "")
        elif finished_results(plan, cfg.detectors) is not None:
            plan.state = "finished"
        elif plan.record is not None and _outcome(plan.record) != "success":
            plan.state = "failed"
            job_id = plan.record["job_id"]
            detail = failure_detail(plan.record)
            ending = states.endings.get(job_id, "")
            lines = [states.notes.get(job_id, ""), ending if ending not in detail else "", detail]
            plan.detail = "\n".join(line for line in lines if line)
        else:  # never submitted, or its job succeeded but the results are out of date (e.g. --detectors)
            plan.state = "missing"
    states.save(cfg.out)


def make_jobs(plans: list[RunPlan], cfg: BenchConfig, cluster: ClusterConfig, launcher: str,
              n_jobs: int) -> list[RunJob]:

    parallel = cluster.parallel(launcher, n_jobs)
    threads = cluster.cpus_per_job
    if launcher == "local" and threads is None:
        threads = max(1, usable_cpus() // parallel)
    slots = str(jobs_folder(cfg.out) / "slots") if launcher == "local" else None
    return [
        RunJob(train_config=plan.train_config,
               eval_config=cfg.eval_config(plan.run_dir / "ckpt.pt"),
               registry=str(Path(cfg.registry).absolute()) if cfg.registry else None, threads=threads,
               slots=slots, max_parallel=parallel, gpus_per_job=cluster.gpus_per_job)
        for plan in plans
    ]


@dataclass
class LaunchOutcome:
    lines: list[str]
    exit_code: int = 0
    report_path: Path | None = None
    report: str | None = None
    submitted: dict[str, str] = field(default_factory=dict)  # run -> job id
    reported: set[str] = field(default_factory=set)  # ids of the failed jobs already listed


def launch_bench(cfg: BenchConfig, cluster: ClusterConfig, launcher: str, wait: bool = False,
                 poll_s: float | None = None) -> LaunchOutcome:
    """Submit the sweep's unfinished runs as jobs; with `wait`, follow them and write the report."""
    from ..data import load_registry
    from .sweep import check_bench

    if launcher not in ("local", "slurm"):
        raise HaloBenchError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}.")
    _require_submitit(launcher)
    check_bench(cfg)  # every name and value, before any submission
    registry = load_registry(cfg.registry)
    from ..evaluate.preflight import check_fit_sizes

    check_fit_sizes(registry, cfg.suite, cfg.detectors, cfg.data_root)  # e.g. knn:k past the train split
    plans = plan_runs(cfg, registry)
    records = read_jobs(cfg.out)
    classify(plans, cfg, JobStates([records[p.name] for p in plans if p.name in records]))
    lines: list[str] = []
    reported: set[str] = set()
    _report_failures(plans, lines, reported)
    todo = [p for p in plans if p.state in ("missing", "failed") or (cfg.force and p.state == "finished")]
    if not cfg.force:
        for plan in todo:
            plan.detail = _check_same_config(plan) or plan.detail
    for plan in plans:
        if plan.state == "running":
            why = f" {plan.detail}" if plan.detail else ""
            lines.append(f"{plan.name}: still running as job {plan.record['job_id']}; not resubmitted.{why}")
    skipped = sum(p.state == "finished" for p in plans) if not cfg.force else 0
    if skipped:
        lines.append(f"{skipped} of {len(plans)} runs already finished; skipped (--force reruns them).")

    outcome = LaunchOutcome(lines, reported=reported)
    live: dict[str, Any] = {}
    if todo:
        parallel = cluster.parallel(launcher, len(todo))
        executor = make_executor(launcher, cfg.out, cluster, len(todo))
        jobs = make_jobs(todo, cfg, cluster, launcher, len(todo))
        if cfg.force:
            for plan in todo:
                _remove_run(plan.run_dir)
        submitted = _submit(executor, jobs, launcher)
        records = {}
        for plan, job in zip(todo, submitted):
            records[plan.name] = {
                "launcher": launcher, "job_id": job.job_id, "folder": str(job.paths.folder),
                "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                "result": str(job.paths.result_pickle), "submitted": utc_now(),
                "unknown_limit_s": cluster.unknown_limit_s(),
            }
            live[job.job_id] = job
            outcome.submitted[plan.name] = job.job_id
        _record_jobs(cfg.out, records)
        how = "as a SLURM job array" if launcher == "slurm" and len(todo) > 1 else f"as {launcher} jobs"
        lines.append(f"submitted {len(todo)} job(s) {how}, at most {parallel} at a time:")
        width = max(len(p.name) for p in todo)
        for plan in todo:
            note = f"  ({plan.detail})" if plan.detail.startswith("checkpoint") else ""
            lines.append(f"  {plan.name:<{width}}  job {outcome.submitted[plan.name]}{note}")
    lines.append(f"job logs and state: {jobs_folder(cfg.out)}")

    if wait:
        plans = follow(plans, cfg, live, poll_s if poll_s is not None else (0.5 if launcher == "local" else 30.0))
    elif todo or any(p.state == "running" for p in plans):
        lines.append("Run the same command again to see which runs finished (it resubmits failed ones and "
                     "writes the report once all are done), or add --wait to follow the jobs.")
        return outcome
    return _finish(plans, cfg, outcome)


def _submit(executor: Any, jobs: list[RunJob], launcher: str) -> list[Any]:
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:
        with _job_environment():
            return executor.submit_array(jobs)
    except (FailedJobError, FailedSubmissionError) as exc:  # sbatch refused it (partition, account, ...)
        last = [line for line in str(exc).splitlines() if line.strip()][-ERROR_LINES:]
        raise HaloBenchError(f"--launcher {launcher}: the submission failed:\n" + "\n".join(last)) from None


def _report_failures(plans: list[RunPlan], lines: list[str], reported: set[str]) -> None:
    """A failed job, once: its log file and the error's last lines."""
    for plan in plans:
        if plan.state == "failed" and plan.record is not None and plan.record["job_id"] not in reported:
            reported.add(plan.record["job_id"])
            lines.append(f"{plan.name}: job {plan.record['job_id']} failed (log {plan.record['stderr']}):")
            lines.extend(f"    {line}" for line in plan.detail.splitlines())


def _remove_run(run_dir: Path) -> None:
    """--force: start the run afresh (a requeued job then resumes this new run, never the old one)."""
    if run_dir.is_dir() and ((run_dir / "ckpt.pt").exists() or (run_dir / "config.json").exists()):
        shutil.rmtree(run_dir)


def follow(plans: list[RunPlan], cfg: BenchConfig, live: dict[str, Any], poll_s: float) -> list[RunPlan]:
    """Poll until no run of the sweep is running, showing each run's epochs."""
    records = [r for r in read_jobs(cfg.out).values()]
    epochs = {p.name: p.resolved.epochs or 1 for p in plans}
    with make_progress() as progress:
        overall = progress.add_task("sweep", total=len(plans), unit="runs finished")
        tasks = {p.name: progress.add_task(p.name, total=epochs[p.name], unit="epochs") for p in plans}
        while True:
            classify(plans, cfg, JobStates(records, live))
            for plan in plans:
                done = _epochs_done(plan.run_dir)
                progress.update(tasks[plan.name], completed=min(done, epochs[plan.name]), status=plan.state)
            counts = {s: sum(p.state == s for p in plans) for s in ("finished", "running", "failed", "missing")}
            progress.update(overall, completed=counts["finished"],
                            status=", ".join(f"{n} {s}" for s, n in counts.items() if n))
            if not counts["running"]:
                return plans
            time.sleep(poll_s)


def _epochs_done(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _finish(plans: list[RunPlan], cfg: BenchConfig, outcome: LaunchOutcome) -> LaunchOutcome:
    """Report the finished runs (never a running or failed one); list failures with their logs."""
    from .sweep import write_reports

    lines = outcome.lines
    _report_failures(plans, lines, outcome.reported)
    finished = [p for p in plans if p.state == "finished"]
    unfinished = [p for p in plans if p.state != "finished"]
    if finished:
        paths = [finished_results(p, cfg.detectors) for p in finished]
        footer = f"{len(finished)} of {len(plans)} runs finished"
        if unfinished:
            footer += "; not included: " + ", ".join(f"{p.name} ({p.state})" for p in unfinished)
        report_path = cfg.report_path()  # and the HTML report beside it, as the inline bench writes
        outcome.report = write_reports([p for p in paths if p is not None], cfg.baseline or cfg.loss_tags()[0],
                                       report_path, footer + ".")
        outcome.report_path = report_path
    if unfinished:
        outcome.exit_code = 1
        lines.append(f"{len(unfinished)} of {len(plans)} runs did not finish: "
                     + ", ".join(f"{p.name} ({p.state})" for p in unfinished)
                     + ". Run the same command again to resubmit them; they resume from their checkpoints.")
    return outcome


def run_launcher(cfg: BenchConfig, launcher: str, wait: bool, config_path: str | os.PathLike[str] | None,
                 flags: dict[str, Any], echo: Callable[[str], Any]) -> int:
    """`bench` with --launcher and the job flags: validate, submit, print; returns the exit status."""
    if launcher not in LAUNCHERS:
        raise unknown_name("launcher", launcher, LAUNCHERS)
    if launcher == "inline":
        given = [("--wait", wait), ("--cluster-config", config_path)]
        given += [("--" + ("sbatch-line" if k == "sbatch_lines" else k.replace("_", "-")), v) for k, v in flags.items()]
        names = [name for name, value in given if value not in (None, False, [])]
        raise HaloBenchError(f"{', '.join(names)} only apply to jobs: add --launcher local or --launcher slurm.")
    slurm_only = [("--" + ("sbatch-line" if k == "sbatch_lines" else k.replace("_", "-")))
                  for k in ("partition", "mem_gb", "account", "sbatch_lines") if flags.get(k) not in (None, [])]
    if launcher == "local" and slurm_only:
        raise HaloBenchError(f"{', '.join(slurm_only)} only apply to --launcher slurm.")
    outcome = launch_bench(cfg, cluster_config(config_path, **flags), launcher, wait)
    for line in outcome.lines:
        echo(line)
    if outcome.report is not None:
        echo(outcome.report)
        echo(f"report written to {outcome.report_path}")
    return outcome.exit_code
