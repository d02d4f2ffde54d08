"""The code's shape, checked: the layers of docs/architecture.md, no import cycle, no long function, every
bundled plugin module listed, every package of the source tree installed."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from importlinter.cli import lint_imports

from harness.plugin.manager import BUILTIN_PLUGINS

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


def test_imports_keep_the_layers_of_docs_architecture(monkeypatch):
    """The import-linter contracts in pyproject.toml: layers, the core never importing a bundled plugin,
    commands independent of each other (function-level imports count)."""
    monkeypatch.chdir(REPO)
    assert lint_imports(no_cache=True, no_logo=True) == 0


def test_the_layer_check_fails_on_an_upward_import(tmp_path, monkeypatch):
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "high.py").write_text("")
    (package / "low.py").write_text("def f():\n    from layered import high\n")
    (tmp_path / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_packages = ["layered"]\n[[tool.importlinter.contracts]]\n'
        'name = "l"\ntype = "layers"\nlayers = ["layered.high", "layered.low"]\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint_imports(config_filename=str(tmp_path / "contracts.toml"), no_cache=True, no_logo=True) == 1


def test_every_package_of_the_source_tree_is_installed():
    """setuptools' packages.find cannot install plugins/ under the name harness_plugins, so the packages are
    listed in pyproject.toml; a new folder missing from the list would be left out of the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert listed == found | {"harness_experiments"}
    assert (REPO / "experiments" / "__init__.py").is_file()
