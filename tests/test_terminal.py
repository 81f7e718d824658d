"""Terminal output that reads anywhere (issue 22): listings at 80 columns and for scripts, progress
as lines in a log file, `--help` without type noise on switches, timm's channel message in our words."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import pytest
import typer.main
from click import Command, Context
from typer.testing import CliRunner

from halo_bench.cli import app

runner = CliRunner()


def _listing(*args: str, columns: int = 80) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def _whole(name: str, text: str) -> bool:
    """`name` appears with no name character glued to either side (so not as part of a longer name)."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text) is not None


def test_detectors_at_80_columns_shows_every_name_and_value_whole() -> None:
    from halo_bench.detectors import DETECTORS, format_value

    text = _listing("detectors")
    assert "…" not in text  # rich's mark of a cut cell
    assert max(map(len, text.splitlines())) <= 80
    assert [line for line in text.splitlines() if line.endswith(" ")] == []  # a log file shows them
    for name, cls in DETECTORS.items():
        assert _whole(name, text), name
        for key, value in cls.defaults.items():  # e.g. temperature=1000 was cut to "temperat…"
            assert f"{key}={format_value(value)}" in text, (name, key)


def test_datasets_at_80_columns_shows_every_name_whole(registry) -> None:
    text = _listing("datasets")
    assert "…" not in text and [line for line in text.splitlines() if line.endswith(" ")] == []
    names = [n for spec in registry.datasets.values() for n in (spec.name, *spec.aliases)]
    names += [s.name for s in registry.suites.values()]
    assert len(names) > 40  # the check below sees the whole registry, openood-cifar10-cifar100 included
    assert [n for n in names if not _whole(n, text)] == []


def test_a_wide_terminal_keeps_the_table() -> None:
    text = _listing("detectors", columns=250)
    header = next(line for line in text.splitlines() if "name" in line and "reads" in line)
    assert "score" in header and "--tune grid" in header  # one row of column headers: a table


@pytest.mark.parametrize("command", ["detectors", "datasets", "losses"])
def test_listings_for_scripts(command: str, registry) -> None:
    from halo_bench.detectors import DETECTORS
    from halo_bench.losses import LOSSES

    expected = {"detectors": set(DETECTORS), "losses": set(LOSSES), "datasets": set(registry.datasets)}[command]
    as_json = json.loads(runner.invoke(app, [command, "--format", "json"]).stdout)
    records = as_json["datasets"] if command == "datasets" else as_json
    assert {r["name"] for r in records} == expected
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [command, "--format", "csv"]).stdout)))
    assert {r["name"] for r in rows} == expected
    if command == "datasets":
        assert {s["name"] for s in as_json["suites"]} == set(registry.suites)
        digits = next(r for r in rows if r["name"] == "digits")
        assert digits["status"] == "in package" and digits["source"] == "embedded"
    if command == "detectors":
        odin = next(r for r in records if r["name"] == "odin")
        assert odin["defaults"] == {"temperature": 1000.0, "eps": 0.0014} and odin["needs"] == ["gradient passes"]
    bad = runner.invoke(app, [command, "--format", "yaml"])
    assert bad.exit_code == 2 and "--format must be one of table, json, csv" in bad.output


def _all_commands() -> list[tuple[list[str], Command]]:
    group = typer.main.get_command(app)
    return [([], group)] + [([name], cmd) for name, cmd in group.commands.items()]  # type: ignore[attr-defined]


def test_help_names_every_option_whole_and_no_type_on_switches() -> None:
    width = 80
    for path, cmd in _all_commands():
        text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(width)}, terminal_width=width).output
        assert "<bool>" not in text and "…" not in text, path
        ctx = Context(cmd, info_name="halo-bench")
        for param in cmd.params:
            for opt in param.opts + param.secondary_opts if param.param_type_name == "option" else []:
                assert _whole(opt, text), (path, opt)  # typer's rich panel cut e.g. --init-from,--in…
            if getattr(param, "is_flag", False):  # a switch takes no value: its names alone, then the help
                names = param.get_help_record(ctx)[0]  # e.g. "--amp / --no-amp", "--compile, --torchcompile"
                assert re.search(rf"^ +{re.escape(names)}( {{2,}}\S|$)", text, re.M), (path, names, text)


def test_help_of_train_lists_the_loss_knob_switches_plainly() -> None:
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "100"}, terminal_width=100).output
    assert re.search(r"^\s+--distill / --no-distill\s+Knob of halo", text, re.M), text
    assert re.search(r"^\s+--learn-gamma / --freeze-gamma\s+Knob of halo", text, re.M), text


# --------------------------------------------------------------------------- progress


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(monkeypatch: pytest.MonkeyPatch, every_s: float, total: int, step_s: float) -> list[str]:
    from rich.console import Console

    from halo_bench.core import console as terminal

    clock = _Clock()
    monkeypatch.setattr(terminal.time, "monotonic", clock)
    out = io.StringIO()
    progress = terminal.LineProgress(Console(file=out, width=200), every_s=every_s)
    with progress:
        task = progress.add_task("odin digits", total=total, unit="batches")
        for _ in range(total):
            clock.now += step_s
            progress.advance(task)
    return out.getvalue().splitlines()


def test_line_progress_writes_a_line_per_tenth_with_counts_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(monkeypatch, every_s=1e9, total=100, step_s=0.5)
    assert len(lines) == 10 and "" not in lines
    assert lines[0] == "odin digits: 10/100 batches (10%), 2 batches/s, 5.0 s elapsed, about 45.0 s left"
    assert lines[-1] == "odin digits: 100/100 batches (100%), 2 batches/s, 50.0 s elapsed"


def test_line_progress_writes_every_n_seconds_on_a_slow_task(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(monkeypatch, every_s=60, total=1000, step_s=1.0)  # a tenth takes 100 s
    counts = [int(re.match(r"odin digits: (\d+)/1000", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert counts[:4] == [60, 100, 160, 200] and counts[-1] == 1000
    assert "1 batches/s" in lines[0] and "0:01:00 elapsed" in lines[0] and "about 0:15:40 left" in lines[0]


def test_a_task_that_does_not_move_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench --wait` polls its runs: a run that waits in the queue for an hour writes no line."""
    from rich.console import Console

    from halo_bench.core import console as terminal

    clock = _Clock()
    monkeypatch.setattr(terminal.time, "monotonic", clock)
    out = io.StringIO()
    progress = terminal.LineProgress(Console(file=out, width=200), every_s=60)
    task = progress.add_task("digits-resnet18-halo-s0", total=10, unit="epochs")
    for _ in range(60):
        clock.now += 60
        progress.update(task, completed=0, status="running")
    assert out.getvalue() == ""
    clock.now += 60
    progress.update(task, completed=1, status="running")
    assert out.getvalue().splitlines() == [
        "digits-resnet18-halo-s0: 1/10 epochs (10%), 0.000273 epochs/s, 1:01:00 elapsed, about 9:09:00 left, running"]


def test_a_fast_task_writes_only_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _lines(monkeypatch, every_s=60, total=50, step_s=0.01) == [
        "odin digits: 50/50 batches (100%), 100 batches/s, 0.5 s elapsed"]


def test_progress_forms(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from halo_bench.core.console import LineProgress, make_progress

    monkeypatch.setenv("HALO_BENCH_PROGRESS", "0")
    with make_progress() as progress:
        progress.advance(progress.add_task("forward digits", total=2, unit="batches"), 2)
    monkeypatch.delenv("HALO_BENCH_PROGRESS")
    assert capsys.readouterr().err == ""
    with make_progress() as progress:  # stderr is no terminal here: lines
        assert isinstance(progress, LineProgress)
        progress.advance(progress.add_task("forward digits", total=2, unit="batches"), 2)
    with make_progress(enabled=False) as progress:  # inside another display
        progress.advance(progress.add_task("forward digits (nested)", total=2, unit="batches"), 2)
    assert re.fullmatch(r"forward digits: 2/2 batches \(100%\), .* elapsed\n", capsys.readouterr().err)
    monkeypatch.setenv("HALO_BENCH_PROGRESS", "bars")
    assert not isinstance(make_progress(), LineProgress)


def test_an_eval_written_to_a_file_logs_progress_lines_and_no_blank_line(tiny_runs, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner's streams are files, not terminals: what a log file or a SLURM job gets."""
    monkeypatch.delenv("HALO_BENCH_PROGRESS")  # as a user runs it (the tests turn progress off)
    result = runner.invoke(app, ["eval", str(tiny_runs["cce"]), "--out", str(tmp_path), "--detectors", "msp,odin",
                                 "--ood", "noise", "--device", "cpu", "--no-cache"])
    assert result.exit_code == 0, result.output
    for text in (result.stdout, result.stderr):
        assert "\n\n" not in text and not text.startswith("\n") and "\x1b" not in text and "\r" not in text, text
    lines = result.stderr.splitlines()
    for label in ("forward digits", "forward noise", "odin digits", "odin noise"):
        assert any(re.match(rf"{label}: (\d+)/\1 batches \(100%\), [\d.]+ batches/s, ", line) for line in lines), lines


# --------------------------------------------------------------------------- timm's channel message


def test_timms_channel_message_is_said_in_our_words(caplog: pytest.LogCaptureFixture) -> None:
    import timm

    from halo_bench.models.weights import WeightsReport, create_from_state

    state = timm.create_model("test_resnet", in_chans=1, num_classes=0).state_dict()
    with caplog.at_level(logging.INFO):
        _, keys = create_from_state("test_resnet", state, in_chans=1)
    assert not [r for r in caplog.records if "source channels" in r.getMessage()]
    (note,) = keys["notes"]
    assert note.startswith("input conv conv1.0: the file's weights already have the model's 1 input channel, "
                           "so they were loaded unchanged") and "declares 3" in note
    report = WeightsReport("file", "w.pth", "w.pth", None, "state_dict", **keys)
    assert report.summary().endswith(note) and report.to_dict()["notes"] == [note]
    rgb = timm.create_model("test_resnet", in_chans=3, num_classes=0).state_dict()
    with caplog.at_level(logging.INFO):
        _, keys = create_from_state("test_resnet", rgb, in_chans=1)  # really converted: timm's own account
    assert keys["notes"] == [] and "(input conv adapted from 3 to 1 channels)" in keys["dropped"]
    assert logging.getLogger("timm.models._builder").filters == []  # the hold-back ends with the load
