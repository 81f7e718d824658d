"""The CLI as the tests drive it: typer's CliRunner, one success and one failure check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from halo_bench.cli import app

runner = CliRunner()


def cli_ok(*args: object) -> str:
    """Run `halo-bench ARGS`; it must succeed. Returns what it printed to stdout."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_fails(*args: object, match: str) -> str:
    """Run `halo-bench ARGS`; it must fail as a user error: exit 2, one message with `match`, no traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert match in result.output, result.output
    return result.output


def results_in(folder: str | Path) -> dict[str, Any]:
    """The results of the one evaluation written to `folder` (an evaluation other than the
    default one is written as results-NAME.json, named by what differs)."""
    (path,) = Path(folder).glob("results*.json")
    return json.loads(path.read_text())


def scores_in(folder: str | Path) -> Path:
    """The scores file of the one evaluation written to `folder`."""
    (path,) = Path(folder).glob("scores*.csv.gz")
    return path
