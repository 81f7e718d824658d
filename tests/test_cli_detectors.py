"""`eval --detectors NAME:PARAM=VALUE`, `--tune`, `--no-cache` and `halo-bench detectors` on the CLI."""

from __future__ import annotations

from pathlib import Path

from clirun import results_in, scores_in
from typer.testing import CliRunner

from halo_bench.cli import app

runner = CliRunner()


def test_detector_settings_end_to_end(tiny_runs, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tiny_runs["halo"]), "--ood", "noise", "--out", str(tmp_path),
                                 "--detectors", "knn:k=3,odin:temperature=10:eps=0,vim,gen:gamma=0.5,ash:variant=b"])
    assert result.exit_code == 0, result.output
    res = results_in(tmp_path)
    assert set(res["ood"]) == {"knn[k=3]", "odin[temperature=10,eps=0]", "vim", "gen[gamma=0.5]", "ash[variant=b]"}
    assert res["detectors"]["ash[variant=b]"]["params"] == {"percentile": 90.0, "variant": "b"}
    assert res["detectors"]["knn[k=3]"]["params"] == {"k": 3.0}
    assert res["detectors"]["odin[temperature=10,eps=0]"]["params"] == {"temperature": 10.0, "eps": 0.0}
    assert res["detectors"]["vim"]["reads"] == "penultimate" and res["detectors"]["vim"]["dim_used"] >= 1
    assert {"ts_temperature", "ts_ece", "ts_nll", "ts_brier"} <= set(res["id_metrics"])
    header = scores_in(tmp_path).open("rb").read(2)
    assert header == b"\x1f\x8b"


def test_bad_settings_are_one_line_errors(tiny_runs, tmp_path: Path) -> None:
    for spec, words in [("knn:k=0", "k must be an integer >= 1"), ("react:percentile=150", "percentile"),
                        ("knn:k=", "is not a number"), ("ash:q=3", "has no parameter"),
                        ("ash:variant=x", "variant must be one of s, p, b")]:
        result = runner.invoke(app, ["eval", str(tiny_runs["cce"]), "--detectors", spec, "--out", str(tmp_path)])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output


def test_help_and_listing() -> None:
    text = runner.invoke(app, ["eval", "--help"], terminal_width=200).output
    for option in ("--tune", "--no-cache", "NAME:PARAM=VALUE"):
        assert option in text
    listing = runner.invoke(app, ["detectors"], terminal_width=250).output
    for name in ("knn", "vim", "react", "ash", "gen", "mds", "rmds", "penultimate", "embedding", "variant=s", "s|p|b"):
        assert name in listing
