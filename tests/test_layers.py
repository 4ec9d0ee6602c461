"""The import graph of src/crashcast: no circle, and every arrow points down the layer order that
docs/ARCHITECTURE.md writes ("Layers"). Imports inside functions count (they run too); imports
under `if TYPE_CHECKING:` do not (they never run: type annotations only), and neither do
`importlib.import_module` calls with a name computed at run time (there are none in the package).
"""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: bottom to top: a module may import modules of its own layer or of the layers below it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("crashcast.errors", "crashcast.types", "crashcast.version", "crashcast.configs")),
    ("settings", ("crashcast.settings",)),
    ("runtime", ("crashcast.runtime", "crashcast.runtime.*")),
    ("data", ("crashcast.data", "crashcast.data.*")),
    ("perception backends", ("crashcast.perception", "crashcast.perception.base", "crashcast.perception.spec",
                             "crashcast.perception.classic", "crashcast.perception.classic.*",
                             "crashcast.perception.models", "crashcast.perception.models.*",
                             "crashcast.perception.egomotion", "crashcast.perception.depth_align",
                             "crashcast.perception.motion_stats")),
    ("perception registry", ("crashcast.perception.registry",)),
    ("config", ("crashcast.config",)),
    ("perception pipeline", ("crashcast.perception.bundle", "crashcast.perception.pipeline")),
    ("features", ("crashcast.features", "crashcast.features.*")),
    ("prompts", ("crashcast.prompts", "crashcast.prompts.builder", "crashcast.prompts.exports")),
    ("run reading", ("crashcast.runs",)),
    ("risk models", ("crashcast.risk", "crashcast.risk.*")),
    ("risk registry", ("crashcast.risk.models",)),
    ("evaluation", ("crashcast.evaluation", "crashcast.evaluation.*")),
    ("readiness", ("crashcast.readiness",)),
    ("orchestration", ("crashcast.extract", "crashcast.prediction", "crashcast.prompts.dataset",
                       "crashcast.live", "crashcast.live.*")),
    ("api", ("crashcast.api", "crashcast.doctor", "crashcast.reproduce")),
    ("cli", ("crashcast.cli",)),
    ("package", ("crashcast",)),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "crashcast").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The crashcast modules `module` imports, anywhere but under TYPE_CHECKING."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import module` imports the module; `from mod import name` the module
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(ast.parse(p.read_text(encoding="utf-8")), m, p.name == "__init__.py", known)
            for m, p in known.items()}


def _layer(module: str) -> int:
    """The layer naming `module` exactly, else the first whose pattern matches it."""
    for i, (_, patterns) in enumerate(LAYERS):
        if module in patterns:
            return i
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch(module, pat) for pat in patterns):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")


def test_every_module_has_a_layer() -> None:
    for m in _modules():
        _layer(m)


def test_no_import_circle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_arrows_point_down_the_layers() -> None:
    up = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
          for m, targets in sorted(_graph().items()) for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not up, "imports that run up the layers:\n  " + "\n  ".join(up)


def test_layers_match_the_architecture_doc() -> None:
    """docs/ARCHITECTURE.md's "Layers" list names the same layers in the same order."""
    doc = (SRC.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = doc.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\d+\. \*\*(.+?)\*\*", section, flags=re.M)
    assert listed == [name for name, _ in LAYERS]


@pytest.mark.parametrize("source,expected", [
    ("import crashcast.config\n", {"crashcast.config"}),
    ("def f():\n    from crashcast.perception import registry\n", {"crashcast.perception.registry"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crashcast import config\n", set()),
    ("import importlib\nimportlib.import_module('crashcast.cli')\n", {"crashcast.cli"}),
    ("from ..config import load_config\n", {"crashcast.config"}),
])
def test_the_graph_sees_every_kind_of_import(source: str, expected: set[str]) -> None:
    """The checker itself: lazy and dynamic imports are edges, TYPE_CHECKING ones are not."""
    assert _imports(ast.parse(source), "crashcast.risk.models", False, _modules()) == expected
