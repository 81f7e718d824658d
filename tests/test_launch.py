"""`bench --launcher local|slurm`: submitit jobs give the inline bench's numbers, survive kills,
preemption and failures, and the SLURM launcher writes the sbatch array it should (no cluster)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halo_bench.bench.jobs import _local_alive
from halo_bench.cli import app

pytest.importorskip("submitit")

runner = CliRunner()
MODEL = "test_resnet"
FAST = ["--model", MODEL, "--detectors", "msp,energy", "--device", "cpu"]
RESULTS = "results-det-msp+energy.json"  # an evaluation with a detector subset, named by it


def _bench(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["bench", *FAST, *args])
    assert result.exit_code == code, result.output
    return result.output


def _jobs(out: Path) -> dict:
    return json.loads((out / "jobs" / "jobs.json").read_text())["runs"]


def _wait_for(predicate, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _epochs_checkpointed(run_dir: Path) -> int:
    """The epochs the run's checkpoint holds (metrics.jsonl is written just before it, so its
    line count can be one ahead)."""
    from halo_bench.core.errors import HaloBenchError
    from halo_bench.models.checkpoint import read_checkpoint

    try:
        return int(read_checkpoint(run_dir / "ckpt.pt")["meta"]["epochs_done"])
    except (HaloBenchError, OSError, KeyError):
        return 0


def _epochs_logged(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _task_pids(controller: int) -> list[int]:
    """The job's task processes: children of submitit's local controller."""
    try:
        return [int(p) for p in Path(f"/proc/{controller}/task/{controller}/children").read_text().split()]
    except OSError:
        return []


def _metrics(results_path: Path) -> dict:
    doc = json.loads(results_path.read_text())
    return {"id": doc["id_metrics"], "ood": {d: v["sets"] for d, v in doc["ood"].items()}}


def test_local_launcher_matches_inline_bench(tmp_path: Path) -> None:
    import torch

    from halo_bench.bench.sweep import BenchConfig, run_bench

    out = tmp_path / "jobs"
    common = ["--seeds", "0", "--epochs", "1", "--out", str(out), "--launcher", "local"]
    # The jobs run in the background while the same runs train inline here.
    text = _bench(*common, "--max-parallel", "2", "--cpus-per-job", "1")
    assert "submitted 2 job(s) as local jobs, at most 2 at a time" in text and "--wait" in text
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each local job here (--cpus-per-job 1): same float reductions
    try:
        run_bench(BenchConfig(model=MODEL, seeds=[0], epochs=1, detectors=["msp", "energy"],
                              out=str(tmp_path / "inline"), device="cpu"))
    finally:
        torch.set_num_threads(threads)
    followed = _bench(*common, "--wait")  # follows the jobs still running, then writes the report
    assert "2 of 2 runs finished" in followed and "report written to" in followed
    jobs = _jobs(out)
    assert len({j["job_id"] for j in jobs.values()}) == 2
    for loss in ("cce", "halo"):
        for seed in (0,):
            name = f"digits-{MODEL}-{loss}-s{seed}"
            assert name in text  # job id listing
            assert _metrics(out / name / RESULTS) == _metrics(tmp_path / "inline" / name / RESULTS)
            log = Path(jobs[name]["stderr"]).read_text()
            assert "'WORLD_SIZE': '1'" in log and "'RANK': '0'" in log  # submitit's distributed env
    # idempotent: nothing left to do, the report is rewritten from the finished runs
    again = _bench(*common)
    assert "2 of 2 runs already finished" in again and "submitted" not in again
    assert (out / f"report-digits-{MODEL}-cce_halo-s0.md").is_file()
    assert (out / f"report-digits-{MODEL}-cce_halo-s0.html").is_file()  # as the inline bench writes


def test_preempted_killed_and_failed_jobs(tmp_path: Path) -> None:
    """One sweep, two jobs: the CCE job is preempted (requeued by submitit, resumes in the same
    job), then killed outright (the next bench resubmits it and it resumes); the HALO job fails
    and is reported with its log while the CCE job finishes."""
    out = tmp_path / "runs"
    out.mkdir()
    cce, halo = f"digits-{MODEL}-cce-s0", f"digits-{MODEL}-halo-s0"
    (out / halo).write_text("a file where the run folder should go")  # the HALO job fails
    common = ["--seeds", "0", "--epochs", "4", "--out", str(out), "--launcher", "local",
              "--max-parallel", "2", "--cpus-per-job", "1"]
    text = _bench(*common)
    assert "submitted 2 job(s)" in text and "--wait" in text
    jobs = _jobs(out)
    controller = int(jobs[cce]["job_id"])

    _wait_for(lambda: _epochs_checkpointed(out / cce) >= 1, what="the first epoch")
    (task,) = _task_pids(controller)
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before preemption or the time limit
    log = Path(jobs[cce]["stderr"])
    _wait_for(lambda: "resuming after epoch" in log.read_text(), what="the requeued task to resume")
    tasks = _task_pids(controller)
    assert tasks and task not in tasks  # the same job, a new task process
    for pid in [*tasks, controller]:  # now a node failure: no signal handler runs
        os.kill(pid, signal.SIGKILL)
    done_at_kill = _epochs_checkpointed(out / cce)
    assert 1 <= done_at_kill < 4, "the job finished before it could be killed"
    assert "preempted or timed out; requeued" in log.read_text()
    _wait_for(lambda: not _local_alive(jobs[halo]["job_id"]), what="the failing job")

    text = _bench(*common, "--wait", code=1)
    # both earlier failures, with their logs and last lines, then the resubmission
    assert f"{cce}: job {jobs[cce]['job_id']} failed (log {jobs[cce]['stderr']})" in text
    assert f"{halo}: job {jobs[halo]['job_id']} failed (log {jobs[halo]['stderr']})" in text
    assert "FileExistsError: [Errno 17] File exists" in text
    assert f"checkpoint at epoch {done_at_kill}/4" in text and "submitted 2 job(s)" in text
    # after the wait: HALO failed again (listed with its new job), CCE finished
    again = _jobs(out)
    assert again[halo]["job_id"] != jobs[halo]["job_id"]
    assert f"{halo}: job {again[halo]['job_id']} failed (log {again[halo]['stderr']})" in text
    assert f"1 of 2 runs finished; not included: {halo} (failed)" in text
    assert (out / cce / RESULTS).is_file() and not (out / halo).is_dir()
    resumed_log = Path(again[cce]["stderr"]).read_text()
    assert f"resuming after epoch {done_at_kill}/4" in resumed_log
    trained = [int(line.split("epoch ")[1].split("/")[0]) for line in resumed_log.splitlines()
               if f"{cce} epoch " in line]
    assert trained == list(range(done_at_kill + 1, 5))  # no epoch before the checkpoint again
    history = [json.loads(line)["epoch"] for line in (out / cce / "metrics.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4]
    report = (out / f"report-digits-{MODEL}-cce_halo-s0.md").read_text()
    assert f"1 of 2 runs finished; not included: {halo} (failed)" in report
    assert json.loads((out / cce / RESULTS).read_text())["checkpoint"]["complete"] is True


def _fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sacct_state: str = "") -> Path:
    """srun, sbatch and sacct stand-ins on PATH: sbatch keeps the script and answers a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f'#!/bin/sh\ncp "$1" "{tmp_path}/sbatch-$(ls {tmp_path} | grep -c sbatch-).sh"\n'
                  'echo "Submitted batch job 4242"\n',
        "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\n"
                 + "".join(f"echo '4242_{i}|{sacct_state}|node1'\n" for i in range(4) if sacct_state),
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_launcher_submits_one_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "runs"
    config = tmp_path / "cluster.yaml"
    config.write_text("partition: cpu\ntime: '4:00:00'\naccount: proj\nmem_gb: 32\n"
                      "sbatch_lines: ['--constraint=a100', '#SBATCH --exclusive']\nsetup: ['module load cuda']\n")
    text = _bench("--seeds", "0,1", "--epochs", "1", "--out", str(out), "--launcher", "slurm",
                  "--cluster-config", str(config), "--partition", "gpu", "--time", "90", "--gpus-per-job", "1",
                  "--cpus-per-job", "8", "--max-parallel", "3")
    assert "submitted 4 job(s) as a SLURM job array, at most 3 at a time" in text
    assert all(f"job 4242_{i}" in text for i in range(4))
    script = (tmp_path / "sbatch-0.sh").read_text()
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32768MB",
                 "#SBATCH --account=proj", "#SBATCH --constraint=a100", "#SBATCH --exclusive",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120", "module load cuda",
                 f"#SBATCH --output={out.absolute()}/jobs/%A_%a_0_log.out"):
        assert line in script.splitlines(), (line, script)
    assert "srun --unbuffered" in script and "submitit.core._submit" in script
    assert not (tmp_path / "sbatch-1.sh").exists()  # one sbatch call for the whole array
    jobs = _jobs(out)
    assert sorted(j["job_id"] for j in jobs.values()) == [f"4242_{i}" for i in range(4)]
    assert jobs[f"digits-{MODEL}-cce-s0"]["stderr"] == f"{out.absolute()}/jobs/4242_0_0_log.err"

    # a second bench while sacct says they run: nothing is resubmitted
    _fake_slurm(tmp_path, monkeypatch, sacct_state="RUNNING")
    text = _bench("--seeds", "0,1", "--epochs", "1", "--out", str(out), "--launcher", "slurm")
    assert text.count("still running as job 4242_") == 4 and "submitted 4" not in text
    assert not (tmp_path / "sbatch-1.sh").exists()

    # once sacct says they failed (no result file), all four go out again as a new array
    _fake_slurm(tmp_path, monkeypatch, sacct_state="FAILED")
    text = _bench("--seeds", "0,1", "--epochs", "1", "--out", str(out), "--launcher", "slurm")
    assert "job 4242_0 failed (log" in text and "no log" in text and "submitted 4 job(s)" in text
    assert "#SBATCH --array=0-3%4" in (tmp_path / "sbatch-1.sh").read_text()


def test_refused_submission_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _fake_slurm(tmp_path, monkeypatch)
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    output = _bench("--seeds", "0", "--out", str(tmp_path / "runs"), "--launcher", "slurm", "--partition", "nope",
                    code=2)
    assert "the submission failed" in output and "invalid partition specified: nope" in output
    assert "Traceback" not in output and not (tmp_path / "runs" / "jobs" / "jobs.json").exists()


def test_time_limits() -> None:
    from halo_bench.bench.cluster import parse_time

    assert parse_time("90") == 90 and parse_time(30) == 30
    assert parse_time("4:00:00") == 240 and parse_time("0:00:30") == 1
    assert parse_time("1-12:00:00") == 36 * 60 and parse_time("2-0") == 48 * 60


@pytest.mark.parametrize(("args", "yaml_text", "match"), [
    (["--launcher", "lokal"], None, "Did you mean 'local'"),
    (["--partition", "gpu"], None, "--partition only apply to jobs: add --launcher local or --launcher slurm"),
    (["--launcher", "local", "--partition", "gpu", "--mem-gb", "4"], None, "--partition, --mem-gb only apply to --launcher slurm"),
    (["--launcher", "local", "--gpus-per-job", "2"], None, "a launcher job is one training process"),
    (["--launcher", "local", "--time", "soon"], None, "--time takes minutes"),
    (["--launcher", "slurm", "--sbatch-line", "--array=0-9"], None, "set by halo-bench itself"),
    (["--launcher", "local"], "partitin: gpu\n", "unknown setting 'partitin'. Did you mean 'partition'?"),
    (["--launcher", "local"], "gpus_per_job: two\n", "gpus_per_job must be an integer >= 0"),
    (["--launcher", "local"], "- a\n- b\n", "expected a mapping"),
    (["--launcher", "local"], "time: [1\n", "not readable YAML"),
    (["--launcher", "local"], "unknown_limit: -1\n", "unknown_limit must be minutes >= 0 or H:MM:SS, got -1"),
])
def test_job_settings_errors(tmp_path: Path, args: list[str], yaml_text: str | None, match: str) -> None:
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args = [*args, "--cluster-config", str(tmp_path / "c.yaml")]
    output = _bench("--out", str(tmp_path / "runs"), *args, code=2)
    assert match in output and "Traceback" not in output
    assert not (tmp_path / "runs" / "jobs").exists()  # nothing submitted


def test_without_submitit_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    output = _bench("--out", str(tmp_path), "--launcher", "local", code=2)
    assert 'pip install "halo-bench[cluster]"' in output


def test_other_config_in_the_run_folder_is_refused(tiny_runs: dict[str, Path]) -> None:
    out = tiny_runs["cce"].parent.parent  # the session's 2-epoch runs; nothing may be written there
    before = sorted(p.name for p in out.rglob("*"))
    output = _bench("--seeds", "0", "--epochs", "3", "--out", str(out), "--launcher", "local", code=2)
    assert "holds a run with a different configuration" in output
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing submitted, no jobs folder


def test_job_settings_fail_before_torch_loads(tmp_path: Path, names_cache: dict[str, str]) -> None:
    """As for every other flag: a mistake is reported without waiting for torch to load."""
    from blocktorch import run_many_without_torch

    cases = [(["--launcher", "lokal"], "Did you mean 'local'"),
             (["--launcher", "slurm", "--gpus-per-job", "2"], "one training process")]
    commands = [["bench", "--out", str(tmp_path / "runs"), *args] for args, _ in cases]
    results = run_many_without_torch(commands, env=names_cache)
    for command, (_, message) in zip(commands, cases, strict=True):
        proc = results[tuple(command)]
        assert proc["code"] == 2 and message in proc["stderr"] and "Traceback" not in proc["stderr"], proc["stderr"]


def test_local_jobs_share_the_cpus_this_process_may_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        registry) -> None:
    from halo_bench.bench.cluster import ClusterConfig
    from halo_bench.bench.jobs import make_jobs, plan_runs
    from halo_bench.bench.sweep import BenchConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine ...
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)  # ... and ours
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cfg = BenchConfig(model=MODEL, seeds=[0], out=str(tmp_path))
    plans = plan_runs(cfg, registry)

    def threads(**cluster: int) -> list[int | None]:
        return [job.threads for job in make_jobs(plans, cfg, ClusterConfig(**cluster), "local", len(plans))]

    assert threads(max_parallel=2) == [4, 4]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # bench itself inside a SLURM allocation
    assert threads(max_parallel=2) == [1, 1]
    assert threads(max_parallel=2, cpus_per_job=3) == [3, 3]  # asked for: as asked


def _failing_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM stand-ins whose sacct fails (accounting off): submitit reports every job UNKNOWN.
    sbatch numbers its arrays 5000, 5001, ... so a resubmission is told apart."""
    bin_dir = _fake_slurm(tmp_path, monkeypatch)
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\n"
                                   "exit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {tmp_path} | grep -c sbatch-)\n'
                                    f'cp "$1" "{tmp_path}/sbatch-$n.sh"\necho "Submitted batch job 500$n"\n')


def test_a_slurm_job_sacct_cannot_see_fails_by_its_log_or_past_the_limit(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_sacct(tmp_path, monkeypatch)
    out, config = tmp_path / "runs", tmp_path / "cluster.yaml"
    config.write_text("unknown_limit: 0\n")  # minutes: dead at the second look without news
    common = ["--seeds", "0", "--epochs", "1", "--out", str(out), "--launcher", "slurm"]
    assert "submitted 2 job(s)" in _bench(*common, "--cluster-config", str(config))
    cce, halo = f"digits-{MODEL}-cce-s0", f"digits-{MODEL}-halo-s0"
    jobs = _jobs(out)
    assert [jobs[cce]["job_id"], jobs[halo]["job_id"]] == ["5000_0", "5000_1"]
    Path(jobs[cce]["stderr"]).write_text(  # killed for its memory: never writes a result
        f"{cce}: job started (slot 0, 8 threads, ...)\nslurmstepd: error: Detected 1 oom-kill event(s) in "
        "StepId=5000_0.batch. Some of your processes may have been killed by the cgroup out-of-memory handler.\n")
    Path(jobs[halo]["stderr"]).write_text(  # requeued: it runs again
        f"{halo}: job started (slot 0, 8 threads, ...)\nslurmstepd: error: *** JOB 5001 ON node1 CANCELLED AT "
        "2026-01-01T00:00:00 DUE TO JOB REQUEUE ***\n")

    text = _bench(*common)  # the limit is the submission's, kept in jobs.json
    assert f"{cce}: job 5000_0 failed (log {jobs[cce]['stderr']})" in text
    assert "its log shows it ended:\n    " in text and "slurmstepd: error: Detected 1 oom-kill event(s)" in text
    assert f"{halo}: still running as job 5000_1; not resubmitted. sacct has reported no state for it" in text
    assert "submitted 1 job(s)" in text and f"{cce}  job 5001\n" in text
    since = _jobs(out)[halo]["unknown_since"]
    assert since <= time.time()

    text = _bench(*common)  # a new bench: the HALO job has been unknown since the last one, past 0 min
    assert f"{halo}: job 5000_1 failed (log {jobs[halo]['stderr']})" in text
    assert "past the 0 min unknown_limit it counts as dead" in text and f"{halo}  job 5002\n" in text
    assert f"{cce}: still running as job 5001; not resubmitted. sacct" in text  # its own first unknown look
    again = _jobs(out)
    assert "unknown_since" not in again[halo] and again[cce]["unknown_since"] >= since


def test_wait_ends_when_sacct_cannot_see_a_job_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              registry) -> None:
    from halo_bench.bench.cluster import cluster_config
    from halo_bench.bench.jobs import launch_bench
    from halo_bench.bench.sweep import BenchConfig

    _failing_sacct(tmp_path, monkeypatch)
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        assert len(polls) < 20, "--wait never ends"

    monkeypatch.setattr(time, "sleep", sleep)
    cfg = BenchConfig(model=MODEL, seeds=[0], losses=["cce"], epochs=1, detectors=["msp"], out=str(tmp_path / "o"),
                      device="cpu")
    outcome = launch_bench(cfg, cluster_config(None, unknown_limit=0), "slurm", wait=True, poll_s=0.01)
    assert polls == [0.01] and outcome.exit_code == 1  # one look that saw it unknown, one that gave up
    assert any("counts as dead" in line for line in outcome.lines)
    assert outcome.lines[-1].startswith("1 of 1 runs did not finish: digits-test_resnet-cce-s0 (failed)")


@pytest.mark.parametrize(("stderr", "stdout", "ended"), [
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***", "", True),
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00:00 ***", "", True),  # scancel
    ("x: job started (slot 0, ...)\nsrun: error: n1: task 0: Out Of Memory", "", True),
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE FAILURE, SEE SLURMCTLD LOG "
     "FOR DETAILS ***", "", True),
    ("", "submitit INFO (2026-01-01 00:00:00,000) - Job completed successfully", True),
    ("submitit ERROR (2026-01-01 00:00:00,000) - Submitted job triggered an exception", "", True),
    # a requeue, then the new attempt: it runs
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***\n"
     "x: job started (slot 0, ...)", "", False),
    ("submitit WARNING (2026-01-01 00:00:00,000) - Caught signal SIGUSR2 on n1: this job is timed-out.\n"
     "x: preempted or timed out; requeued, it resumes from its last checkpoint.",
     "submitit INFO (2026-01-01 00:00:01,000) - Requeued job 7 (2 remaining timeouts)", False),
    ("x: job started (slot 0, ...)\nx epoch 3/10: loss 0.5", "submitit INFO (...) - Starting with JobEnvironment()",
     False),
    (None, None, False),  # no log yet: pending
])
def test_a_jobs_log_tells_whether_its_latest_attempt_ended(tmp_path: Path, stderr: str | None, stdout: str | None,
                                                           ended: bool) -> None:
    from halo_bench.bench.jobs import log_ending

    record = {"stderr": str(tmp_path / "7_0_log.err"), "stdout": str(tmp_path / "7_0_log.out")}
    for key, text in (("stderr", stderr), ("stdout", stdout)):
        if text is not None:
            Path(record[key]).write_text(text + "\n")
    assert (log_ending(record) is not None) == ended
