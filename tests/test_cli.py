"""The command line end to end (train -> eval -> report) and every error path a user can hit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import yaml
from clirun import cli_fails as _fails
from clirun import cli_ok as _ok
from clirun import results_in, runner

from halo_bench.cli import app
from halo_bench.data.registry import DEFAULT_REGISTRY
from halo_bench.evaluate import metrics


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> Path:
    """Two seeds of CCE and HALO, trained and evaluated through the CLI (each test may use them)."""
    out = tmp_path_factory.mktemp("cli")
    for loss in ("cce", "halo"):
        for seed in ("0", "1"):
            _ok("train", "test_resnet", "--loss", loss, "--epochs", "1", "--seed", seed, "--out", str(out))
            few = [] if seed == "0" else ["--detectors", "msp,energy,knn"]  # seed 0 runs every detector
            _ok("eval", str(out / f"digits-test_resnet-{loss}-s{seed}" / "ckpt.pt"), *few)
    return out


def test_train_eval_report_end_to_end(cli_runs: Path) -> None:
    run = cli_runs / "digits-test_resnet-halo-s0"
    assert {"ckpt.pt", "config.json", "metrics.jsonl", "results.json", "scores.csv.gz"} <= {
        p.name for p in run.iterdir()}
    results = json.loads((run / "results.json").read_text())
    assert results["checkpoint"]["sha256"] and results["seed"] == 0 and results["suite"] == "digits"
    assert set(results["ood"]) == {"msp", "maxlogit", "energy", "mahalanobis", "odin", "halo_abstain", "halo_distance",
                                   "gen", "knn", "vim", "react", "ash", "mds", "rmds"}
    assert results["detectors"]["odin"]["params"] == {"temperature": 1000.0, "eps": 0.0014}
    assert set(results["datasets"]) == {"digits", "digits-6to9", "textures", "photos", "faces", "noise"}
    assert "abstain_rate" in results["id_metrics"]

    markdown = _ok("report", "--runs", str(cli_runs), "--format", "markdown")
    assert "| energy" in markdown and "CCE" in markdown and "HALO" in markdown and "Δ" in markdown
    assert "seeds 0,1" in markdown and "±" in markdown
    csv = pd.read_csv(StringIO(_ok("report", str(cli_runs), "--format", "csv")))
    row = csv[(csv.detector == "energy") & (csv.dataset == "far mean") & (csv.metric == "auroc") & (csv.loss == "halo")]
    assert len(row) == 1 and row.n.iloc[0] == 2
    report_json = json.loads(_ok("report", str(cli_runs), "--format", "json"))
    assert len(report_json["runs"]) == 4
    assert "\\toprule" in _ok("report", str(cli_runs), "--format", "latex")


def test_scores_file_reproduces_every_metric(cli_runs: Path, tmp_path: Path) -> None:
    # Seed 1 was evaluated with three detectors only: evaluate it with all of them, into a folder of
    # its own, so the runs' folders hold what the end-to-end test counts in any order.
    run = cli_runs / "digits-test_resnet-cce-s1"
    _ok("eval", str(run / "ckpt.pt"), "--out", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    scores = pd.read_csv(tmp_path / "scores.csv.gz")
    assert list(scores.columns[:5]) == ["dataset", "group", "index", "label", "pred"]
    id_rows = scores[scores.group == "id"]
    assert len(id_rows) == results["datasets"]["digits"]["n"]
    assert 100 * (id_rows.pred == id_rows.label).mean() == pytest.approx(results["id_metrics"]["acc"])
    for det, det_res in results["ood"].items():
        for name, values in det_res["sets"].items():
            ood = scores[scores.dataset == name][det].to_numpy()
            again = metrics.ood_metrics(id_rows[det].to_numpy(), ood)
            for key in metrics.OOD_METRICS:
                assert again[key] == pytest.approx(values[key], abs=1e-9), (det, name, key)
        for group in ("near", "far"):  # the group means: unweighted over the group's sets
            members = [values for values in det_res["sets"].values() if values["group"] == group]
            assert members, (det, group)
            for key in metrics.OOD_METRICS:
                expected = math.fsum(values[key] for values in members) / len(members)
                assert det_res[group][key] == pytest.approx(expected, abs=1e-9), (det, group, key)


def test_eval_subset_of_sets_and_detectors(cli_runs: Path, tmp_path: Path) -> None:
    ckpt = cli_runs / "digits-test_resnet-cce-s0" / "ckpt.pt"
    _ok("eval", str(ckpt), "--ood", "noise,near", "--detectors", "energy,msp", "--out", str(tmp_path))
    results = results_in(tmp_path)
    assert set(results["ood"]) == {"energy", "msp"}
    assert set(results["ood"]["energy"]["sets"]) == {"noise", "digits-6to9"}


def test_listing_commands() -> None:
    assert "digits-6to9" in runner.invoke(app, ["datasets"]).output
    listing = runner.invoke(app, ["detectors"]).output
    for name in ("msp", "maxlogit", "energy", "odin", "mahalanobis", "halo_abstain", "halo_distance"):
        assert name in listing


@pytest.mark.parametrize("command", ["train", "eval", "report", "bench", "datasets", "download", "losses",
                                     "detectors"])
def test_help_documents_every_option(command: str) -> None:
    import typer.main

    cmd = typer.main.get_command(app).commands[command]
    options = [p for p in cmd.params if p.param_type_name == "option" and "--help" not in p.opts]
    assert options or command in ("losses", "detectors")  # the check below must see the options
    for param in options:
        assert param.help, f"{command} {param.opts} has no help"
        assert all(opt.startswith("-") and "_" not in opt for opt in param.opts + param.secondary_opts)
    for param in cmd.params:
        if param.param_type_name == "argument":
            assert getattr(param, "help", None), f"{command} {param.name} has no help"


def test_user_errors_exit_2_with_one_message(cli_runs: Path, tmp_path: Path) -> None:
    ckpt = cli_runs / "digits-test_resnet-cce-s0" / "ckpt.pt"
    _fails("eval", str(tmp_path / "missing.pt"), match="does not exist")
    _fails("train", "resnet81", "--epochs", "1", "--out", str(tmp_path), match="Did you mean 'resnet18'")
    _fails("train", "test_resnet", "--suite", "digitz", "--out", str(tmp_path), match="Did you mean 'digits'")
    _fails("train", "test_resnet", "--loss", "focal", "--out", str(tmp_path), match="unknown loss")
    _fails("eval", str(ckpt), "--ood", "nosie", match="Did you mean 'noise'")
    _fails("eval", str(ckpt), "--detectors", "odin,mahalanobsi", match="Did you mean 'mahalanobis'")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ckpt.read_bytes()[:5000])
    _fails("eval", str(corrupt), match="not a readable checkpoint")
    bad_yaml = tmp_path / "datasets.yaml"
    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    doc["suites"]["digits"]["recipe"]["lr"] = "fast"
    bad_yaml.write_text(yaml.safe_dump(doc))
    _fails("datasets", "--registry", str(bad_yaml), match="recipe.lr: expected a positive number")
    _fails("report", "--runs", str(tmp_path / "nothing"), match="does not exist")
    _fails("report", str(cli_runs), "--format", "docx", match="unknown report format")
    _fails("bench", "--seeds", "a,b", match="--seeds takes comma-separated integers")


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "halo_bench", "eval", str(tmp_path / "nope.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_help_does_not_import_torch() -> None:
    code = "import sys, halo_bench.cli; assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_eval_names_the_registry_a_checkpoint_needs(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    doc["suites"]["tiny"] = dict(doc["suites"]["digits"], description="a custom suite")
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(doc))
    _ok("train", "test_resnet", "--suite", "tiny", "--epochs", "1", "--out", str(tmp_path), "--registry", str(custom))
    ckpt = tmp_path / "tiny-test_resnet-halo-s0" / "ckpt.pt"
    _fails("eval", str(ckpt), match=f"--registry {custom}")
    _ok("eval", str(ckpt), "--registry", str(custom), "--detectors", "msp")


def test_error_text_is_not_read_as_markup(tmp_path: Path) -> None:
    output = _fails("eval", str(tmp_path / "a[bold]b[/b]c.pt"), match="does not exist")
    assert "a[bold]b[/b]c.pt" in output


def test_report_to_a_directory_is_a_clean_error(cli_runs: Path, tmp_path: Path) -> None:
    _fails("report", str(cli_runs), "-o", str(tmp_path), match="is a directory")


def test_worker_tracebacks_are_reduced_to_our_message() -> None:
    from halo_bench.cli import _strip_worker_traceback

    wrapped = ("Caught HaloBenchError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nhalo_bench.errors.HaloBenchError: cannot read image /d/1.png: broken\n')
    assert _strip_worker_traceback(wrapped) == "cannot read image /d/1.png: broken"
    assert _strip_worker_traceback("plain message") == "plain message"
    multi = ("Caught EmbeddedDataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
             '  File "x.py", line 1, in f\nhalo_bench.data.embedded.EmbeddedDataError: line one\nline two: do this\n')
    assert _strip_worker_traceback(multi) == "line one\nline two: do this"


def test_interrupt_exits_130_and_says_how_to_resume(monkeypatch, tmp_path: Path) -> None:
    import halo_bench.train.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(halo_bench.train.loop, "train", interrupted)
    result = runner.invoke(app, ["train", "test_resnet", "--out", str(tmp_path)])
    assert result.exit_code == 130 and "resumes from its last checkpoint" in result.output


def test_runtime_flags_reach_every_run_and_evaluation_of_a_bench(monkeypatch, tmp_path: Path) -> None:
    """train, eval and bench take the same runtime flags (one core.runtime.Runtime), and a bench
    hands them to each run's training and evaluation."""
    import halo_bench.bench.sweep as sweep

    seen = {}

    def fake_run_bench(cfg):
        seen["train"] = cfg.train_configs()
        seen["eval"] = cfg.eval_config(tmp_path / "ckpt.pt")
        return "report", tmp_path / "report.md"

    monkeypatch.setattr(sweep, "run_bench", fake_run_bench)
    _ok("bench", "--model", "test_resnet", "--seeds", "0", "--losses", "cce", "--out", tmp_path, "--device", "cpu",
        "--no-amp", "--no-channels-last", "-j", "0", "--data-pipeline", "loader")
    wanted = {"device": "cpu", "amp": False, "channels_last": False, "num_workers": 0, "data_pipeline": "loader"}
    for cfg in [*seen["train"], seen["eval"]]:
        assert {k: getattr(cfg, k) for k in wanted} == wanted, cfg
    for command in ("train", "eval", "bench"):
        text = _ok(command, "--help")
        assert all(flag in text for flag in ("--amp", "--no-channels-last", "--num-workers", "--data-pipeline",
                                             "--device", "--data-root")), command
