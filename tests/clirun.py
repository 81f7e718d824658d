"""The CLI as the tests drive it: typer's CliRunner, one success and one failure check."""

from __future__ import annotations

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
