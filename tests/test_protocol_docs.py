"""The plugin author's reference is complete, and the core reads capabilities instead of probing for them.

Every optional member of an algorithm has its default on ``harness.plugin.algorithm.ImageAlgorithm`` and is
set on an algorithm that lacks it when it registers, so the core reads ``algorithm.trains`` directly. These
tests fail when an optional member is missing from ``register_algorithms``' docstring, when the core or a
bundled plugin probes a registered object or a model with ``getattr``/``hasattr`` again, when a model's
optional capability (a protocol: backbones' models are built per run, not registered) is undocumented, and
when a hook is missing from ``docs/plugins.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.plugin import hookspecs
from harness.plugin.algorithm import OPTIONAL_MEMBERS
from harness.plugin.protocols import OwnBodyPerSet, OwnForwardTasks
from harness.plugin.registry import OPTIONAL_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
#: Variable names that hold a registered plugin object -> its kind.
REGISTERED = ("algorithm", "task_sampler", "env_plugin", "evaluator", "command", "backbone", "tracker")
PROBE = re.compile(r"(?:getattr|hasattr)\((?:\w+\.)*(\w+)(?:\.get\([^)]*\))?, \"(\w+)\"")


def probes() -> list[tuple[str, str, str]]:
    """``(variable, attribute, file)`` for every getattr/hasattr with a literal name, outside harness/plugin
    (where the defaults are resolved, once)."""
    found = set()
    for path in [*(REPO / "harness").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]:
        if path.parent.name == "plugin":
            continue
        for variable, attribute in PROBE.findall(path.read_text()):
            found.add((variable, attribute, str(path.relative_to(REPO))))
    return sorted(found)


def test_the_probe_finder_finds_a_probe():
    assert PROBE.findall('if getattr(self.algorithm, "trains", True):') == [("algorithm", "trains")]
    assert PROBE.findall('own = getattr(model, "forward_tasks", None)') == [("model", "forward_tasks")]


def test_no_registered_plugin_object_is_probed():
    assert [p for p in probes() if p[0].endswith(REGISTERED) or p[0].rstrip("s").endswith(REGISTERED)] == []


def test_no_model_is_probed():
    """A model's optional fast paths are the protocols below, its split ``harness.engine.network``."""
    assert [p for p in probes() if p[0] == "model"] == []


@pytest.mark.parametrize("member", [m for m in OPTIONAL_MEMBERS if m != "description"])
def test_every_optional_algorithm_member_is_documented(member):
    assert f"``{member}" in hookspecs.register_algorithms.__doc__


@pytest.mark.parametrize(
    "hook, member", [("register_environments", "paper_returns"), ("register_evaluators", "options")]
)
def test_every_optional_member_of_the_other_kinds_is_documented(hook, member):
    assert member in OPTIONAL_DEFAULTS[{"register_environments": "environment"}.get(hook, "evaluator")]
    assert f"``{member}" in getattr(hookspecs, hook).__doc__


@pytest.mark.parametrize("protocol", [OwnForwardTasks, OwnBodyPerSet], ids=lambda protocol: protocol.__name__)
def test_every_optional_model_capability_is_documented(protocol):
    members = [name for name in vars(protocol) if not name.startswith("_")]
    assert len(members) == 1
    assert f"``{members[0]}(" in hookspecs.register_backbones.__doc__
    assert protocol.__name__ in hookspecs.register_backbones.__doc__


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
