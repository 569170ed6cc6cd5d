"""The import graph of tap_analytics: `tap.py` sits on top, nothing below imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tap_analytics"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the tap_analytics modules it imports (top level and inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports pkg.mod when that is a module
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps.update(x for x in targets if x in modules and x != name)
        graph[name] = deps
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def test_the_graph_is_read() -> None:
    graph = import_graph()
    # the scan finds real edges, function-level imports included
    assert "tap_analytics.insights" in graph["tap_analytics.tap"]
    assert "tap_analytics.insights.streams" in graph["tap_analytics.insights"]


def test_tap_is_in_no_import_cycle() -> None:
    graph = import_graph()
    assert "tap_analytics.tap" not in reachable(graph, "tap_analytics.tap")


def test_only_entry_points_import_the_tap() -> None:
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items() if "tap_analytics.tap" in deps)
    assert all(m.endswith("__main__") for m in importers), importers
