"""The documentation (issue 22): the site builds offline with warnings as errors, its CLI
reference is the typer app's own `--help`, and every README command that runs offline runs."""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from halo_bench.cli import app

ROOT = Path(__file__).resolve().parents[1]
API = ["HALOHead", "with_halo_head", "register_loss", "LossSpec", "Detector", "register_detector", "DetectorContext",
       "register_source"]
runner = CliRunner()


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = _mkdocs(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_the_site_builds_strict_with_the_api_reference(site: Path) -> None:
    pages = {p.parent.name for p in site.glob("*/index.html")}
    assert {"getting-started", "byom", "detectors", "datasets", "report", "cluster-gpu", "extending", "architecture",
            "method", "protocol", "integrity", "faq", "cli", "api"} <= pages
    api = (site / "api" / "index.html").read_text()
    for name in API:  # mkdocstrings gives each object a heading whose id is its full path
        assert re.search(rf'id="halo_bench\.[\w.]*\b{name}"', api), name
    assert not list(site.rglob("gen_cli.py"))  # the hook is not published
    assert "fonts.googleapis" not in (site / "index.html").read_text()  # theme.font: false, nothing fetched


def _help(path: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`halo-bench PATH --help` as the command prints it in an 80-column terminal (typer's CliRunner
    forces its own width, so the app is called directly)."""
    with pytest.raises(SystemExit) as stop:
        app([*path, "--help"], prog_name="halo-bench")
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_the_cli_reference_is_every_commands_help(site: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    page = (site / "cli" / "index.html").read_text()
    blocks = [html.unescape(re.sub(r"<[^>]+>", "", b)) for b in re.findall(r"<pre[^>]*>(.*?)</pre>", page, re.S)]
    group = typer.main.get_command(app)
    commands = [([], group)] + [([name], cmd) for name, cmd in group.commands.items()]  # type: ignore[attr-defined]
    assert len(blocks) == len(commands)
    for (path, cmd), block in zip(commands, blocks, strict=True):
        assert block.strip() == _help(path, capsys).strip(), path
        for param in cmd.params:
            for opt in param.opts + param.secondary_opts if param.param_type_name == "option" else []:
                assert opt in block, (path, opt)


def _small_site(tmp_path: Path, page: str) -> subprocess.CompletedProcess:
    """The real configuration (validation, autorefs, the CLI hook) over one page of ours."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text(page)
    config.update(docs_dir=str(docs), nav=["index.md", "cli.md"], hooks=[str(ROOT / "docs" / "gen_cli.py")])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    return _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")


def test_a_broken_link_or_reference_fails_the_build(tmp_path: Path) -> None:
    """Good links of each kind beside a broken one of each kind: only the broken ones are reported
    (the full site's build above is the control that good links pass)."""
    page = ("# Home\n\nThe [reference][command-line-reference] and [train](cli.md#halo-bench-train) resolve;\n"
            "a [missing page](nowhere.md), a [missing anchor](cli.md#halo-bench-fly) and [a ref][no-such-heading] "
            "do not.\n")
    proc = _small_site(tmp_path, page)
    assert proc.returncode != 0
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3, proc.stderr
    for words in ("link 'nowhere.md', but the target is not found", "does not contain an anchor '#halo-bench-fly'",
                  "Could not find cross-reference target 'no-such-heading'"):
        assert sum(words in w for w in warnings) == 1, (words, proc.stderr)


# --------------------------------------------------------------------------- the README's commands

# Needs a network, a GPU, a cluster, data or a file of the user's:
SKIP = re.compile(r"--suite (?!digits\b)|--pretrained|--init-from|--launcher|--device cuda|torchrun|~/|\.\.\.")
# Slow, so parsed only: the whole sweep, every figure (about a minute on 2 cores), grid searches.
SLOW = re.compile(r"^bench\b|--format html|--tune")
RUN = ("train", "eval", "report", "losses", "detectors", "datasets")


def _commands(markdown: str) -> list[list[str]]:
    """The `halo-bench ...` commands of the fenced bash blocks, each line's `&&` parts, comments dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["halo-bench"]:
                    found.append(words[1:])
    return found


def _parses(group: Any, words: list[str]) -> None:
    """click parses `words` as halo-bench would (names, types, ranges), without running the command."""
    try:
        if words[0] in group.commands:  # type: ignore[attr-defined]
            parent = group.make_context("halo-bench", words[:1], resilient_parsing=True)
            group.commands[words[0]].make_context(words[0], words[1:], parent=parent)  # type: ignore[attr-defined]
        else:
            group.make_context("halo-bench", list(words))
    except typer.Exit:  # --version prints and stops, as it should
        pass


def test_every_documented_command_parses() -> None:
    """Every halo-bench line of the README and of the docs' bash blocks: known options, valid values."""
    lines = [w for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for w in _commands(doc.read_text()) if "..." not in w]
    assert len(lines) > 40
    group = typer.main.get_command(app)
    for words in lines:
        _parses(group, words)


def _small(words: list[str]) -> list[str]:
    """A README command at test size: timm's tiny test_resnet for resnet18, one epoch, two detectors
    on one OOD set."""
    words = [w.replace("resnet18", "test_resnet") for w in words]
    if words[0] == "train":
        words += ["--epochs", "1"]
    if words[0] == "eval":
        words += [] if "--detectors" in words else ["--detectors", "msp,energy"]
        words += [] if "--ood" in words else ["--ood", "noise"]
    return words


def test_the_readmes_offline_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule: a README `halo-bench` line runs, in the README's order and at `_small` settings, when its
    command is one of RUN on the embedded suite, it needs nothing outside this machine (SKIP) and is not
    SLOW; the others (the set-up lines' `bench` among them) are parsed by the test above."""
    commands = _commands((ROOT / "README.md").read_text())
    runnable = [w for w in commands if w and w[0] in RUN and not SKIP.search(shlex.join(w))
                and not SLOW.search(shlex.join(w))]
    assert [w[0] for w in runnable].count("train") >= 2 and "eval" in [w[0] for w in runnable]
    assert ["bench"] in commands  # the main job, parsed by the test above
    monkeypatch.chdir(tmp_path)
    for words in runnable:
        result = runner.invoke(app, _small(words))
        assert result.exit_code == 0, (words, result.output)
        if words[0] == "report" and "-o" not in words:
            assert "HALO" in result.stdout and "CCE" in result.stdout, result.stdout
    assert {p.parent.name for p in tmp_path.glob("runs/*/results*.json")} >= {"digits-test_resnet-halo-s0",
                                                                             "digits-test_resnet-cce-s0"}
