"""The plugin author's reference is complete: every optional attribute the core probes is documented.

The core decides behaviour from optional attributes (``getattr(algorithm, "adapts", None)``);
a plugin author learns them from the hook specs' docstrings only. These tests read the core's
source for every such probe and fail when the matching hook spec does not name it, and fail
when a hook is missing from ``docs/plugins.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.plugin import hookspecs

REPO = Path(__file__).resolve().parents[1]
#: Variable names in the core -> the hook spec that documents that kind of object.
ROLES = {
    "algorithm": "register_algorithms",
    "model": "register_backbones",
    "task_sampler": "register_task_samplers",
    "env_plugin": "register_environments",
    "evaluator": "register_evaluators",
    "command": "register_commands",
}
PROBE = re.compile(r"(?:getattr|hasattr)\((?:\w+\.)*(\w+)(?:\.get\([^)]*\))?, \"(\w+)\"")


def probes() -> list[tuple[str, str, str]]:
    found = set()
    for path in [*(REPO / "harness").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]:
        for variable, attribute in PROBE.findall(path.read_text()):
            role = next((r for r in ROLES if variable.endswith(r) or variable == f"{r}s"), None)
            if role is None and variable == "task_samplers":
                role = "task_sampler"
            if role is not None:
                found.add((ROLES[role], attribute, str(path.relative_to(REPO))))
    return sorted(found)


def test_the_probe_finder_finds_the_known_probes():
    hooks_and_attributes = {(hook, attribute) for hook, attribute, _ in probes()}
    assert {
        ("register_algorithms", "adapts"),
        ("register_algorithms", "for_run"),
        ("register_backbones", "forward_tasks"),
        ("register_evaluators", "options"),
    } <= hooks_and_attributes


@pytest.mark.parametrize("hook, attribute, where", probes())
def test_every_optional_attribute_the_core_reads_is_documented_in_its_hook_spec(hook, attribute, where):
    doc = getattr(hookspecs, hook).__doc__
    assert f"``{attribute}" in doc, (
        f"{where} reads {attribute!r}, which {hook}'s docstring in harness/plugin/hookspecs.py does not name"
    )


def test_every_hook_is_in_the_plugin_docs():
    hooks = [name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "harness_spec", None)]
    assert len(hooks) >= 9
    text = (REPO / "docs" / "plugins.md").read_text()
    assert [hook for hook in hooks if f"`{hook}`" not in text] == []


def test_the_public_api_resolves_and_import_harness_does_not_load_torch():
    import subprocess
    import sys

    import harness

    assert all(getattr(harness, name) is not None for name in harness.__all__)
    code = "import sys, harness, harness.cli; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"  # the CLI's first line comes before torch is imported
