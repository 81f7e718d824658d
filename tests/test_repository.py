"""The repository stands alone: its links resolve, nothing points outside it, and a
built package carries the dataset registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = "../" + "shared"  # spelt in two parts so this file does not match itself


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]
    return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]


def test_nothing_refers_to_files_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _tracked_files()
                 if p.suffix in {".py", ".md", ".yaml", ".toml", ".txt", ".cfg", ""}
                 and OUTSIDE in p.read_text(errors="replace")]
    assert offenders == []


def test_every_relative_link_in_the_markdown_resolves() -> None:
    broken = []
    for doc in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+://|^#|^mailto:", target):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.name}: {target}")
    assert broken == []


def test_the_registry_lives_at_the_top_level_once() -> None:
    copies = [p for p in _tracked_files() if p.name == "datasets.yaml"]
    assert copies == [ROOT / "datasets.yaml"]


def test_a_built_package_carries_the_registry(tmp_path: Path) -> None:
    build = tmp_path / "lib"
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    packaged = build / "halo_bench" / "datasets.yaml"
    assert packaged.read_bytes() == (ROOT / "datasets.yaml").read_bytes()
    code = "from halo_bench.data.registry import DEFAULT_REGISTRY; print(DEFAULT_REGISTRY)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(build), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert where.stdout.strip() == str(packaged), where.stderr
    assert "digits" in yaml.safe_load(packaged.read_text())["suites"]
