"""The import graph of app/ runs one way: the platform and the schemas at the bottom, the domain
packages above them, the routers, the console and the CLI on top, and no circle between two
modules except imports made only for the type checker (under `if TYPE_CHECKING:`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"


def _module(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in APP.rglob("*.py")}


def _type_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> set[str]:
    """The app modules imported when the code runs (a function's own imports included)."""
    found: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if _type_only(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(ast.parse(path.read_text())) - {name} for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for other in sorted(GRAPH[name]):
            if state.get(other) == 1:
                return [*stack[stack.index(other) :], other]
            if other not in state and (found := visit(other)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert _cycle() is None


@pytest.mark.parametrize(
    ("floor", "below"), [("app.platform", ()), ("app.schemas", ("app.platform",))]
)
def test_the_bottom_floors_import_nothing_above_them(floor: str, below: tuple[str, ...]) -> None:
    upward = {
        (name, other)
        for name, imported in GRAPH.items()
        if name.startswith(floor)
        for other in imported
        if not other.startswith((floor, *below)) and other != "app"
    }
    assert upward == set()


def test_only_the_outer_ring_imports_the_routers_the_app_and_the_cli() -> None:
    outer = ("app.api", "app.main", "app.cli", "app.web")
    inward = {
        (name, other)
        for name, imported in GRAPH.items()
        if not name.startswith(outer)
        for other in imported
        if other.startswith(outer)
    }
    assert inward == set()


def test_the_graph_is_read() -> None:
    # The checks above would pass on an empty graph: make sure imports are seen.
    assert "app.platform.db" in GRAPH["app.platform.tables"]
    assert "app.signals.ingest" in GRAPH["app.api.signals"]
    assert "app.governance.auth" not in GRAPH["app.platform.runtime"]  # type-only
