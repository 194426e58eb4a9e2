"""The layering rules, enforced: data flows templates -> generator -> filters -> shards,
and imports point the same way.

- filters/ and shards/ import from generator/ only its leaf modules (the record type,
  the error tree, the validators) and the engine seam's types (`generator.engines`,
  never an engine implementation);
- shards/ imports nothing from filters/;
- no project module imports another in a circle, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("generator", "filters", "shards", "templates")
LEAVES = {"generator.records", "generator.errors", "generator.validators", "generator.engines"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


MODULES = project_modules()


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in MODULES:
                found.add(name)
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_the_module_graph_was_found():
    assert {"generator.build", "generator.task", "generator.merge", "filters.stage"} <= set(GRAPH)
    assert "generator.records" in GRAPH["filters.stage"]


@pytest.mark.parametrize("layer", ["filters", "shards"])
def test_lower_layers_import_only_generator_leaves(layer):
    offending = {
        (module, imported)
        for module, imported_set in GRAPH.items()
        if module.split(".")[0] == layer
        for imported in imported_set
        if imported.split(".")[0] == "generator" and imported not in LEAVES
    }
    assert offending == set()


def test_shards_never_import_filters():
    offending = {
        (module, imported)
        for module, imported_set in GRAPH.items()
        if module.startswith("shards")
        for imported in imported_set
        if imported.startswith("filters")
    }
    assert offending == set()


def test_leaves_import_no_other_project_module():
    for leaf in LEAVES - {"generator.engines"}:
        assert GRAPH[leaf] <= {"generator.errors", "generator.validators"}, leaf
    assert GRAPH["generator.engines"] <= {"generator.errors", "generator.validators"}


def test_no_import_cycles():
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []
