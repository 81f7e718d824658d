"""The layering of docs/architecture.md, kept true (issue 19): the folders of `halo_bench/` are
the pipeline's stages, no stage imports a later one, and no modules import each other in a
circle.

Read from the source with `ast`, nothing imported: every `import` and `from ... import`,
at the top of a module or inside a function, absolute or relative; the submodules that
`core.lazy.lazy_exports` names in a package `__init__`; the modules `importlib.import_module`
is given; and module names written as strings (`"halo_bench.losses.linear:LinearHead"`,
the heads a `LossSpec` imports when a model is built).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "halo_bench"
DOC = ROOT / "docs" / "architecture.md"

# The pipeline, earliest first: a stage may import itself and the stages before it, never one after it.
# `results` (results.py, the results contract) comes before `evaluate`: it is defined early, on
# `core` alone, and `evaluate` fills it; `report` reads it. `halo_bench` is the package root, the
# public facade (`halo_bench/__init__.py`, lazy heads and `with_halo_head`) and `python -m halo_bench`.
ORDER = ("core", "data", "losses", "models", "features", "train", "detectors", "results", "evaluate", "report",
         "bench", "cli", "halo_bench")

# Imports that run back up the pipeline, allowed only as lazy public entry points (inside a
# function, or through `lazy_exports`) that docs/architecture.md names: (importing module,
# imported module) -> the name docs/architecture.md gives. There are none today.
ALLOWED_BACK: dict[tuple[str, str], str] = {}


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Overrides conftest's: nothing here runs torch, so this file does not import it (it stays under a second)."""


_MODULE_STRING = re.compile(r"halo_bench(?:\.\w+)*(?::\w+)?")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    path: str  # the importing file, relative to the repository
    line: int
    lazy: bool  # inside a function, or a lazy export / module-name string: runs on first use, not on import

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}" + (" (lazily)" if self.lazy else "")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "halo_bench"
    return parts[1]


def _resolve(package: str, name: str | None, level: int) -> str:
    """The absolute module that `from <level dots><name>` names inside `package`."""
    if not level:
        return name or ""
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _target(module: str, attr: str | None = None) -> str | None:
    """`module.attr` when that is a module of halo_bench, else `module`; None outside halo_bench."""
    if attr and f"{module}.{attr}" in MODULES:
        return f"{module}.{attr}"
    while module and module not in MODULES:  # `import halo_bench.x.y` of a name that is not a file
        module = module.rpartition(".")[0]
    return module or None


def _lazy_exports(tree: ast.Module, package: str) -> list[tuple[str, int]]:
    """Submodules named to `lazy_exports(__name__, {...})`, directly or through a module-level dict."""
    dicts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    dicts[t.id] = node.value
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "lazy_exports"):
            continue
        assert len(node.args) == 2, f"lazy_exports at line {node.lineno}: expected (package, exports)"
        pkg_arg, exports = node.args
        assert isinstance(pkg_arg, ast.Name) and pkg_arg.id == "__name__", (
            f"line {node.lineno}: lazy_exports should be given __name__, the package it serves")
        if isinstance(exports, ast.Name):
            exports = dicts[exports.id]
        assert isinstance(exports, ast.Dict), f"line {node.lineno}: lazy_exports' exports should be a dict literal"
        for value in exports.values:
            assert isinstance(value, ast.Constant) and isinstance(value.value, str)
            out.append((f"{package}.{value.value}", value.lineno))
    return out


_DYNAMIC = re.compile(r"import_module\(|__import__\(|[\"']halo_bench\.")


def _edges_of(module: str, path: Path) -> list[Edge]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str | None, int, bool]] = []

    def statements(body: list[ast.stmt], lazy: bool) -> None:
        """Import statements, at the top and in every block; a function's body runs when it is called."""
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((_target(a.name), node.lineno, lazy) for a in node.names
                             if a.name.split(".")[0] == "halo_bench")
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(package, node.module, node.level)
                if base.split(".")[0] == "halo_bench":
                    found.extend((_target(base, a.name), node.lineno, lazy) for a in node.names)
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for name in ("body", "orelse", "finalbody"):
                block = getattr(node, name, None)
                if isinstance(block, list):
                    statements(block, inner)
            for clause in [*getattr(node, "handlers", ()), *getattr(node, "cases", ())]:
                statements(clause.body, inner)

    def dynamic(node: ast.AST, lazy: bool) -> None:
        """`importlib.import_module("...")`, `__import__("...")` and "halo_bench.x[:attr]" strings
        (a module name to import on first use, such as a loss's head: lazy wherever it is written)."""
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            name = node.args[0].value
            if isinstance(name, str) and name.startswith("."):
                name = _resolve(package, name.lstrip("."), len(name) - len(name.lstrip(".")))
            if isinstance(name, str) and name.split(".")[0] == "halo_bench":
                found.append((_target(name), node.lineno, lazy))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _MODULE_STRING.fullmatch(node.value) and "." in node.value):
            found.append((_target(node.value.partition(":")[0]), node.lineno, True))
        body = node.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else (
            [node.body] if isinstance(node, ast.Lambda) else [])
        for child in ast.iter_child_nodes(node):
            dynamic(child, lazy or any(child is b for b in body))

    statements(tree.body, False)
    if _DYNAMIC.search(source):
        dynamic(tree, False)
    if "lazy_exports" in source:
        found += [(_target(name), line, True) for name, line in _lazy_exports(tree, package)]
    rel = str(path.relative_to(ROOT))
    return [Edge(module, target, rel, line, lazy)
            for target, line, lazy in dict.fromkeys(found) if target and target != module]


def _edges() -> list[Edge]:
    return [e for module, path in MODULES.items() for e in _edges_of(module, path)]


EDGES = _edges()


def _circles(graph: dict[str, set[str]], limit: int = 5) -> list[list[str]]:
    """Up to `limit` distinct circles, each the shortest one through its first node: [a, b, ..., a]."""
    out: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(graph):
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if start in graph.get(v, ()):
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                circle = [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    out.append(circle)
                break
            for w in sorted(graph.get(v, ())):
                if w not in parent and w != start:
                    parent[w] = v
                    queue.append(w)
        if len(out) >= limit:
            break
    return out


def _explain(circles: list[list[str]], of: Callable[[str], str]) -> str:
    """Each circle, hop by hop, with the first import (file and line) that makes each hop."""
    lines = []
    for circle in circles:
        lines.append("  " + " -> ".join(circle))
        for a, b in pairwise(circle):
            first = next(e for e in EDGES if of(e.source) == a and of(e.target) == b)
            lines.append(f"      {first.where()}")
    return "\n".join(lines)


def test_every_module_has_a_stage():
    unknown = sorted({f"{m} ({stage(m)})" for m in MODULES if stage(m) not in ORDER})
    assert not unknown, f"modules outside the stages of ORDER (add the stage, in pipeline order): {unknown}"
    assert set(ORDER) == {stage(m) for m in MODULES}, "a stage of ORDER has no module"


def test_the_scan_sees_imports():
    """The scan finds the kinds of import it claims to (so an empty answer means something)."""
    kinds = {(e.source, e.target, e.lazy) for e in EDGES}
    assert ("halo_bench.models.classifier", "halo_bench.losses", False) in kinds  # `from ..losses import ...`
    assert ("halo_bench.models.finetune", "halo_bench.losses", True) in kinds  # inside a function
    assert ("halo_bench.train.setup", "halo_bench.models.finetune", True) in kinds  # `from ..models import finetune`
    assert ("halo_bench.train", "halo_bench.train.loop", True) in kinds  # lazy_exports
    assert ("halo_bench.losses.cce", "halo_bench.losses.linear", True) in kinds  # a head named as a string
    assert ("halo_bench", "halo_bench.models.finetune", True) in kinds  # the facade's lazy attribute
    assert any(stage(e.source) == "evaluate" and stage(e.target) == "results" and not e.lazy for e in EDGES)
    assert len(EDGES) > 300


def test_no_stage_imports_a_later_one():
    rank = {s: i for i, s in enumerate(ORDER)}
    back = [e for e in EDGES if rank[stage(e.target)] > rank[stage(e.source)]]
    bad = [e for e in back if not (e.lazy and (e.source, e.target) in ALLOWED_BACK)]
    assert not bad, ("imports that run back up the pipeline " + " -> ".join(ORDER) + " (docs/architecture.md):\n"
                     + "\n".join(f"  {e.where()}  [{stage(e.source)} -> later {stage(e.target)}]" for e in bad))


def test_allowed_back_imports_are_named_and_still_there():
    text = DOC.read_text(encoding="utf-8")
    for allowed, name in ALLOWED_BACK.items():
        assert f"`{name}`" in text, f"{allowed}: docs/architecture.md does not name `{name}`"
        assert any((e.source, e.target) == allowed for e in EDGES), f"{allowed} is allowed but no longer imported"


def test_no_circle_between_stages():
    graph: dict[str, set[str]] = defaultdict(set)
    for e in EDGES:
        if stage(e.source) != stage(e.target):
            graph[stage(e.source)].add(stage(e.target))
    circles = _circles(graph)
    assert not circles, "stages that import each other in a circle:\n" + _explain(circles, stage)


def test_no_circle_between_modules():
    """No modules import each other, counting imports inside functions too."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in EDGES:
        graph[e.source].add(e.target)
    circles = _circles(graph)
    assert not circles, "modules that import each other in a circle:\n" + _explain(circles, lambda m: m)


def test_the_doc_states_this_order():
    """docs/architecture.md states ORDER in words and lists the stages in ORDER in its table."""
    text = DOC.read_text(encoding="utf-8")
    assert " → ".join([*ORDER[:-1], "the package root"]) in text
    rows = re.findall(r"^\| [^|]+ \| `([a-z_]+)(?:/|\.py)`", text, flags=re.MULTILINE)
    assert [{"__init__": "halo_bench"}.get(r, r) for r in rows] == list(ORDER), rows
