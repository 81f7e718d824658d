"""MkDocs hook: the CLI reference page (`cli.md`), generated from the typer app at every build.

Each command's section is its `--help` exactly as `halo-bench CMD --help` prints it in a terminal
80 columns wide or wider, so the page can never drift from the code. `python docs/gen_cli.py` prints the page.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 80
PAGE = "cli.md"


def _app_command() -> Any:
    if str(ROOT) not in sys.path:  # this checkout's halo_bench, not an installed copy
        sys.path.insert(0, str(ROOT))
    import typer.main

    from halo_bench.cli import app

    return typer.main.get_command(app)


def help_text(path: list[str]) -> str:
    """`halo-bench PATH --help` as printed in a terminal `WIDTH` columns wide (click wraps help at
    80 columns in any wider terminal, so the text is the same there)."""
    group = _app_command()
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # what click reads for the terminal's width
    try:
        ctx = group.make_context("halo-bench", [], resilient_parsing=True)
        cmd = group
        for name in path:
            cmd = group.commands[name]
            ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        return cmd.get_help(ctx)
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def render() -> str:
    """The whole page: an index of the commands, then each command's help."""
    group = _app_command()
    names = list(group.commands)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the typer app when the site is built (`docs/gen_cli.py`): each block is what",
        f"`halo-bench COMMAND --help` prints in a terminal {WIDTH} columns wide or wider. Every option has help;",
        "a user error (a bad name, value or path) prints one line and exits with status 2.",
        "",
        "| command | what it does |",
        "|---|---|",
        *(f"| [`{n}`](#halo-bench-{n}) | {_first_line(group.commands[n])} |" for n in names),
        "",
        "## halo-bench",
        "",
        "```text",
        help_text([]).rstrip(),
        "```",
    ]
    for name in names:
        lines += ["", f"## halo-bench {name}", "", "```text", help_text([name]).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _first_line(cmd: Any) -> str:
    return (cmd.help or "").strip().splitlines()[0].replace("|", "\\|")


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated page to the site's files (nothing is written to docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


if __name__ == "__main__":
    sys.stdout.write(render())
