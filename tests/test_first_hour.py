"""What a new user hits in the first hour: names, flags, paths, messages, timm habits.

Checks that need no trained model run in a subprocess where importing torch or timm
fails, which proves they are answered before the heavy libraries load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from blocktorch import PRELUDE, run_many_without_torch
from clirun import cli_fails as _fails
from clirun import cli_ok as _ok
from clirun import results_in, runner

from halo_bench.cli import app

BLOCK_TORCH = PRELUDE + "sys.argv = ['halo-bench'] + sys.argv[1:]\nfrom halo_bench.cli import main\nmain()\n"


def _run_without_torch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


BAD_COMMANDS = [
    (["train", "resnet18", "--loss", "focal"], "unknown loss 'focal'"),
    (["train", "resnet18", "--loss", "halo", "--tau", "0.1"], "loss 'halo' has no knob(s) tau"),
    (["train", "resnet18", "--lr", "nan"], "--lr must be a finite number"),
    (["train", "resnet18", "--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["train", "resnet18", "--suite", "digitz"], "Did you mean 'digits'"),
    (["train", "resnet81"], "Did you mean 'resnet18'"),
    (["train", "resnet18.a1_in1k"], "names timm's pretrained weights 'a1_in1k'"),
    (["bench", "--seeds", "0,0"], "lists seed(s) 0 twice"),
    (["bench", "--seeds=-1"], "--seeds must be >= 0"),
    (["bench", "--seeds", ""], "names no seed"),
    (["bench", "--losses", "cce,halo", "--baseline", "logitnorm"], "--baseline 'logitnorm' is not one"),
    (["report", "--format", "docx"], "unknown report format 'docx'"),
    (["eval", "nowhere/ckpt.pt"], "does not exist"),
    (["train", "resnet18", "--data-pipeline", "gpu"], "--data-pipeline must be one of auto, device, loader"),
    (["eval", "nowhere/ckpt.pt", "--data-pipeline", "gpu"], "--data-pipeline must be one of"),
]
LISTINGS = [(["losses"], "logitnorm"), (["--version"], "0."), (["datasets"], "digits-6to9"),
            (["detectors"], "halo_distance")]


@pytest.fixture(scope="module")
def without_torch(names_cache) -> dict[tuple, dict]:
    """Every command of this module's torch-free checks, run in one process with torch and timm
    unimportable (the process asserts neither was imported)."""
    return run_many_without_torch([args for args, _ in BAD_COMMANDS + LISTINGS], env=names_cache)


@pytest.mark.parametrize("args,message", BAD_COMMANDS)
def test_bad_names_flags_and_paths_fail_before_torch_loads(without_torch, args: list[str], message: str) -> None:
    proc = without_torch[tuple(args)]
    assert proc["code"] == 2, proc["stderr"]
    assert message in proc["stderr"] and "Traceback" not in proc["stderr"], proc["stderr"]


def test_listings_and_version_need_no_torch(without_torch) -> None:
    for args, expected in LISTINGS:
        proc = without_torch[tuple(args)]
        assert proc["code"] == 0, proc["stderr"]
        assert expected in proc["stdout"] + proc["stderr"]


def test_timm_flag_names_are_accepted_as_aliases() -> None:
    import typer.main

    commands = typer.main.get_command(app).commands
    opts = {opt for param in commands["train"].params if param.param_type_name == "option" for opt in param.opts}
    assert {"--clip-grad", "--smoothing", "--data-dir", "--workers", "-j", "-b", "--torchcompile"} <= opts
    eval_opts = {opt for param in commands["eval"].params if param.param_type_name == "option" for opt in param.opts}
    assert {"--data-dir", "--workers", "-j", "-b", "--limit"} <= eval_opts


def test_aliases_train_like_the_long_names(tmp_path: Path) -> None:
    _ok("train", "test_resnet", "--loss", "cce", "--epochs", "1", "-b", "32", "--clip-grad", "3", "--smoothing",
        "0.05", "-j", "0", "--out", str(tmp_path))
    config = json.loads((tmp_path / "digits-test_resnet-cce+ls0.05-s0" / "config.json").read_text())
    tc = config["train_config"]
    assert (tc["batch_size"], tc["grad_clip"], tc["loss_knobs"], tc["num_workers"]) == (
        32, 3.0, {"label_smoothing": 0.05}, 0)
    assert config["versions"]["torch_threads"] == torch.get_num_threads()  # the thread count changes results


@pytest.fixture(scope="module")
def unfinished_and_finished(tmp_path_factory) -> Path:
    """A CCE run stopped after 1 of 2 epochs and a finished HALO run of another seed, both evaluated."""
    from halo_bench.data import load_registry
    from halo_bench.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("mixed")

    def stop(epoch: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(model="test_resnet", loss="cce", epochs=2, out=str(out)), load_registry(), on_epoch_end=stop)
    train(TrainConfig(model="test_resnet", loss="halo", seed=1, epochs=1, out=str(out)), load_registry())
    return out


def test_report_on_runs_not_yet_evaluated_says_to_run_eval(unfinished_and_finished: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(unfinished_and_finished / "digits-test_resnet-halo-s1", tmp_path / "run")
    for pattern in ("results*.json", "scores*.csv.gz"):  # every evaluation another test may have written
        for path in (tmp_path / "run").glob(pattern):
            path.unlink()
    _fails("report", "--runs", str(tmp_path), match="have not been evaluated yet: run `halo-bench eval")


def test_unfinished_runs_are_left_out_and_listed(unfinished_and_finished: Path) -> None:
    out = unfinished_and_finished
    result = runner.invoke(app, ["eval", str(out / "digits-test_resnet-cce-s0"), "--detectors", "msp"])
    assert result.exit_code == 0 and "unfinished run (epoch 1 of 2)" in result.output
    _ok("eval", str(out / "digits-test_resnet-halo-s1"), "--detectors", "msp")
    report = _ok("report", "--runs", str(out))
    assert "Left out of the tables" in report and "training unfinished (epoch 1 of 2)" in report
    assert "CCE" not in report.split("Left out")[0] and "Δ HALO" not in report  # nothing compared with it
    kept = _ok("report", "--runs", str(out), "--include-incomplete")
    assert "CCE [unfinished]" in kept


def test_limit_marks_results_partial_and_keeps_them_out_of_reports(unfinished_and_finished: Path,
                                                                  tmp_path: Path) -> None:
    ckpt = unfinished_and_finished / "digits-test_resnet-halo-s1" / "ckpt.pt"
    _ok("eval", str(ckpt), "--limit", "20", "--detectors", "msp,energy", "--out", str(tmp_path))
    results = results_in(tmp_path)
    assert results["partial"] == {"limit": 20}
    assert {v["n"] for v in results["datasets"].values()} == {20}
    _fails("report", str(tmp_path), match="partial evaluation (--limit 20)")


def test_a_parent_folder_given_to_eval_lists_the_checkpoints(unfinished_and_finished: Path) -> None:
    out = unfinished_and_finished
    message = _fails("eval", str(out / "ckpt.pt"), match="does not exist")
    assert str(out / "digits-test_resnet-halo-s1" / "ckpt.pt") in message
    listing = _fails("eval", str(out), match="is a folder without a ckpt.pt")
    assert "digits-test_resnet-cce-s0" in listing


def test_config_json_and_a_pickled_model_get_messages_that_say_what_they_are(tmp_path: Path) -> None:
    from halo_bench.losses import LinearHead

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"run": "x"}))
    _fails("eval", str(config), match="looks like JSON text (a run's config.json or results.json?)")
    whole = tmp_path / "model.pt"
    torch.save(LinearHead(4, 3), whole)
    message = _fails("eval", str(whole), match="holds pickled Python objects (")
    assert "halo_bench.losses.linear.LinearHead" in message
    assert "save model.state_dict() instead" in message and message.rstrip().endswith(".")


def test_bench_report_is_named_by_what_it_covers() -> None:
    from halo_bench.bench.sweep import BenchConfig

    three = BenchConfig(seeds=[0, 1, 2]).report_path()
    one = BenchConfig(seeds=[0]).report_path()
    control = BenchConfig(seeds=[0, 1, 2], losses=["cce", "cce:label_smoothing=0.1", "halo"]).report_path()
    assert len({three, one, control}) == 3
    assert three.name == "report-digits-resnet18-cce_halo-s0-1-2.md"


def test_download_failures_go_on_and_print_the_manual_route(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    def offline(self, *args, **kwargs):
        Path(kwargs.get("root", args[0] if args else tmp_path)).mkdir(parents=True, exist_ok=True)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torchvision.datasets.SVHN, "__init__", offline)
    result = runner.invoke(app, ["download", "svhn", "lsun", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    output = result.output
    assert "svhn: download failed (" in output and "lsun" in output and "still missing: svhn, lsun" in output
    assert "http://ufldl.stanford.edu/housenumbers/test_32x32.mat" in output
    assert "eb5a983be6a315427106f1b164d9cef3" in output and str(tmp_path / "svhn" / "test_32x32.mat") in output
    assert not (tmp_path / "svhn").exists()  # nothing half-made left behind


def test_eval_names_every_missing_set_at_once(unfinished_and_finished: Path, tmp_path: Path) -> None:
    ckpt = unfinished_and_finished / "digits-test_resnet-halo-s1" / "ckpt.pt"
    message = _fails("eval", str(ckpt), "--ood", "svhn,lsun", "--data-root", str(tmp_path), match="2 dataset(s) missing")
    assert "'svhn'" in message and "'lsun-crop'" in message


EVAL_REQUESTS = [
    (["--detectors", "nosuch"], "unknown detector 'nosuch'"),
    (["--detectors", "knn:k=0"], "knn': k must be an integer >= 1"),
    (["--detectors", "halo_abstain"], "detector 'halo_abstain' reads a HALO head"),  # a CCE run
    (["--ood", "svhn,lsun"], "2 dataset(s) missing under"),
]


@pytest.fixture(scope="module")
def eval_requests(unfinished_and_finished: Path, tmp_path_factory, names_cache) -> dict[tuple, dict]:
    ckpt = unfinished_and_finished / "digits-test_resnet-cce-s0" / "ckpt.pt"
    empty = tmp_path_factory.mktemp("no-data")
    commands = [["eval", str(ckpt), *args, "--data-root", str(empty)] for args, _ in EVAL_REQUESTS]
    results = run_many_without_torch(commands, env=names_cache)
    return {tuple(args): results[tuple(command)] for (args, _), command in zip(EVAL_REQUESTS, commands, strict=True)}


@pytest.mark.parametrize("args,message", EVAL_REQUESTS)
def test_eval_request_errors_come_before_torch_loads(eval_requests, args: list[str], message: str) -> None:
    """Detector names, settings, the head they need and the datasets' presence are read from the
    run's config.json: a mistake costs no torch import (and no checkpoint read)."""
    proc = eval_requests[tuple(args)]
    assert proc["code"] == 2, proc["stderr"]
    assert message in proc["stderr"] and "Traceback" not in proc["stderr"], proc["stderr"]


def test_limit_says_on_the_console_that_the_run_is_partial(tiny_runs, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tiny_runs["cce"]), "--limit", "10", "--detectors", "msp",
                                 "--ood", "noise", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "partial evaluation: only the first 10 images of each split (--limit)" in result.output
