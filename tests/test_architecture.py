"""The code's shape, checked: no import cycle, no long function, every bundled plugin module listed."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.plugin_manager import BUILTIN_PLUGINS

REPO = Path(__file__).resolve().parent.parent
LONGEST_FUNCTION = 60  # lines of code, the docstring not counted


def modules() -> dict[str, Path]:
    """Every module of the core and the bundled plugins, by import name."""
    found = {}
    for path in sorted((REPO / "harness").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        parts[0] = "harness_plugins" if parts[0] == "plugins" else parts[0]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere (a function's lazy import counts too)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
    return named & set(known)


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports from ``start`` back to it, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, chain = stack.pop()
        for other in sorted(graph[module]):
            if other == start:
                return [*chain, start]
            if other not in seen:
                seen.add(other)
                stack.append((other, [*chain, other]))
    return None


def test_no_module_imports_itself_through_others():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    cycles = {" -> ".join(chain) for name in graph if (chain := cycle_from(name, graph))}
    assert cycles == set()


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_from("a", graph) == ["a", "b", "c", "a"] and cycle_from("d", graph) is None


def long_functions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - node.lineno + 1 if body else 0
            if lines > LONGEST_FUNCTION:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert [entry for path in modules().values() for entry in long_functions(path)] == []


def test_every_bundled_module_that_implements_a_hook_is_a_listed_plugin():
    implementing = {
        name
        for name, path in modules().items()
        if (name.startswith("harness_plugins.") or name.startswith("harness.commands."))
        and "hookimpl" in path.read_text()
    }
    assert set(BUILTIN_PLUGINS) == implementing
    assert len(BUILTIN_PLUGINS) == len(set(BUILTIN_PLUGINS))
