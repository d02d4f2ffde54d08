"""Plugin system: registration, duplicates, unknown names, filters, broken plugins."""

import importlib.metadata
import sys
import types

import pytest
from conftest import run_cli

import harness
from harness.errors import HarnessError
from harness.plugin.manager import builtin_plugins, load_plugins
from harness.plugin.registry import Registry


def make_plugin(name, algorithm_name):
    module = types.ModuleType(name)

    class Algo:
        description = "test algorithm"

        def train_step(self, model, episodes, hp):
            return {}

        def predict(self, model, episodes, hp):
            return None

    Algo.name = algorithm_name

    @harness.hookimpl
    def register_algorithms(registry):
        registry.add(Algo())

    module.register_algorithms = register_algorithms
    return module


def test_builtins_register_the_paper_algorithms_and_commands():
    plugins = load_plugins()
    assert {"maml", "fomaml", "anil"} <= set(plugins.algorithms.names())
    assert {"conv4", "conv4-pool"} <= set(plugins.backbones.names())
    assert "omniglot" in plugins.task_samplers
    assert {"run", "eval", "list", "plugins"} <= set(plugins.commands.names())
    assert plugins.algorithms.plugin_of("anil") == "harness_plugins.algorithms.anil"


def test_plugin_registered_in_code_adds_an_algorithm():
    plugins = load_plugins(extra_plugins=(make_plugin("my_plugin", "my-algo"),))
    assert plugins.algorithms.plugin_of("my-algo") == "my_plugin"


def test_duplicate_name_names_both_plugins():
    plugins = load_plugins(extra_plugins=(make_plugin("copycat", "maml"),))
    with pytest.raises(HarnessError) as error:
        plugins.algorithms.get("maml")
    assert str(error.value) == (
        "algorithm 'maml' is registered twice: by plugin 'harness_plugins.algorithms.maml' and by plugin 'copycat'; "
        "leave one out with HARNESS_BLOCK_PLUGINS=copycat"
    )


def test_unknown_name_lists_valid_names():
    registry = Registry("algorithm")
    registry.current_plugin = "p"
    for name in ("b", "a"):
        registry.add(types.SimpleNamespace(name=name, train_step=None, predict=None))
    with pytest.raises(HarnessError, match=r"^unknown algorithm 'zz'; valid algorithms: a, b$"):
        registry.get("zz")


def test_object_without_name_is_rejected():
    registry = Registry("backbone")
    registry.current_plugin = "sloppy"
    with pytest.raises(HarnessError, match="plugin 'sloppy' registered a backbone without a string 'name'"):
        registry.add(object())


def test_block_and_allow_list(monkeypatch):
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "harness_plugins.algorithms.maml")
    assert "maml" not in load_plugins().algorithms
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS")
    monkeypatch.setenv("HARNESS_PLUGINS", "harness_plugins.algorithms.anil,harness.commands.list")
    plugins = load_plugins()
    assert plugins.algorithms.names() == ["anil"]
    assert {"list", "plugins", "run"} <= set(plugins.commands.names())  # built-in commands always load


def test_broken_entry_point_is_reported_and_others_load(monkeypatch, tmp_path):
    good = tmp_path / "good_plugin_mod.py"
    good.write_text(
        "import harness\n\nclass A:\n    name = 'good-algo'\n    description = ''\n"
        "    def train_step(self, model, episodes, hp):\n        return {}\n"
        "    def predict(self, model, episodes, hp):\n        return None\n\n"
        "@harness.hookimpl\ndef register_algorithms(registry):\n    registry.add(A())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        importlib.metadata.EntryPoint(name="broken", value="no_such_module_for_harness_tests", group="harness"),
        importlib.metadata.EntryPoint(name="good", value="good_plugin_mod", group="harness"),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == "harness" else [])
    plugins = load_plugins()
    assert "good-algo" in plugins.algorithms and "maml" in plugins.algorithms
    assert len(plugins.load_errors) == 1
    error = plugins.load_errors[0]
    assert error.plugin == "broken"
    assert error.source == "entry point broken = no_such_module_for_harness_tests"
    assert error.error.startswith("ModuleNotFoundError")
    assert plugins.sources["good"] == "entry point good = good_plugin_mod"


def test_plugins_command_lists_builtins():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for module in builtin_plugins():
        assert module in result.stdout
    assert "algorithms: anil" in result.stdout


def test_list_command_shows_every_kind():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for heading in ("algorithms:", "backbones:", "task samplers:", "environments:", "evaluators:", "trackers:"):
        assert heading in result.stdout
    assert "fomaml" in result.stdout and "conv4-pool" in result.stdout


def test_bundled_package_is_not_a_top_level_plugins_module():
    load_plugins()
    assert "harness_plugins" in sys.modules
    assert "plugins" not in sys.modules


def test_env_plugins_without_the_rl_extra_are_left_out_quietly(tmp_path):
    fake = tmp_path / "gymnasium"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'gymnasium'\", name='gymnasium')\n")
    result = run_cli("plugins", env_extra={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0 and result.stderr == ""
    assert (
        "not loaded harness_plugins.envs.navigation: pip install 'feature-reuse-harness[rl]' (needs gymnasium)"
        in result.stdout
    )
    assert "FAILED" not in result.stdout and "harness_plugins.algorithms.maml " in result.stdout
