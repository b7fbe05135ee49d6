"""The package map: what an installed llm-recipes ships is every package of the checkout."""

from __future__ import annotations

import ast

import pytest
from conftest import PROJECT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_every_package_is_installed():
    """pyproject lists the packages by hand (recipes/ ships as llm_recipes.recipes); a new subpackage left out of
    the list works in an editable install and is missing from a wheel."""
    listed = set(tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(PROJECT).parts)
        for init in (PROJECT / "llm_recipes").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert listed - {"llm_recipes.recipes"} == found


def _module_level_imports() -> dict[str, set[str]]:
    """Each llm_recipes module -> the llm_recipes modules it imports at module level (not inside a function or
    class body, nor under `if TYPE_CHECKING:`). `from llm_recipes.x import y` counts as llm_recipes.x.y when that is
    a module, else as llm_recipes.x."""
    modules = {}
    for path in (PROJECT / "llm_recipes").rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(PROJECT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        edges = set()
        stack = list(ast.parse(path.read_text(encoding="utf-8")).body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                stack.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    edges.add(child if child in modules else node.module)
            else:
                stack.extend(ast.iter_child_nodes(node))
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return path[path.index(target) :] + [target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    """No llm_recipes module imports itself back through others at module level: a cycle makes which module must be
    imported first matter, and a stage's layer (training, rl, compress) never depends on one above it."""
    graph = _module_level_imports()
    assert len(graph) > 50
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_names_the_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
