"""A failing plugin is contained: reported by name and disabled while everything else goes on.

Registration hooks that raise, misspelt hooks, name collisions, unknown names in the allow and
block lists, and lifecycle hooks that raise during image and meta-RL runs.
"""

from __future__ import annotations

import importlib.metadata
import types

import pytest
from test_runs import small_config

import harness
from harness.errors import HarnessError
from harness.plugin.manager import load_plugins
from harness.rl.training import RLConfig, RLTrainer
from harness.run.training import Trainer


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, harness.hookimpl(function))
    return module


def algorithm(name: str):
    members = {"name": name, "description": "test", "train_step": lambda *a: {}, "predict": lambda *a: None}
    return type("Algo", (), members)()


def test_a_registration_hook_that_raises_disables_only_its_plugin():
    def register_algorithms(registry):
        registry.add(algorithm("half-registered"))
        raise RuntimeError("database not reachable")

    def register_backbones(registry):
        registry.add(algorithm("its-backbone"))

    plugins = load_plugins(
        extra_plugins=(plugin("flaky", register_algorithms=register_algorithms, register_backbones=register_backbones),)
    )
    assert [(e.plugin, e.error) for e in plugins.load_errors] == [
        ("flaky", "register_algorithms raised RuntimeError: database not reachable")
    ]
    assert "half-registered" not in plugins.algorithms and "its-backbone" not in plugins.backbones
    assert {"maml", "anil"} <= set(plugins.algorithms.names()) and not plugins.manager.has_plugin("flaky")


def test_a_misspelt_hook_is_an_error_naming_the_plugin_and_the_hook():
    plugins = load_plugins(extra_plugins=(plugin("typo", register_algorithm=lambda registry: None),))
    assert [(e.plugin, e.error) for e in plugins.load_errors] == [
        ("typo", "defines hook 'register_algorithm', which does not exist (did you mean 'register_algorithms'?)")
    ]
    assert not plugins.manager.has_plugin("typo")


def test_a_name_collision_is_an_error_only_where_the_name_is_used(monkeypatch, capsys):
    copycat = plugin("copycat", register_algorithms=lambda registry: registry.add(algorithm("maml")))
    plugins = load_plugins(extra_plugins=(copycat,))
    with pytest.raises(HarnessError) as error:
        plugins.algorithms.get("maml")
    assert str(error.value) == (
        "algorithm 'maml' is registered twice: by plugin 'harness_plugins.algorithms.maml' and "
        "by plugin 'copycat'; leave one out with HARNESS_BLOCK_PLUGINS=copycat"
    )
    assert plugins.algorithms.get("anil").name == "anil"  # every other name works

    import harness.cli as cli
    import harness.plugin.manager as plugin_manager

    monkeypatch.setattr(plugin_manager, "_cached", plugins)  # what every command's get_plugins() returns
    assert cli.main(["plugins"]) == 0
    assert (
        "COLLISION algorithm 'maml' is registered twice: by plugin 'harness_plugins.algorithms.maml' and by plugin "
        "'copycat'"
    ) in capsys.readouterr().out
    assert cli.main(["list", "algorithms"]) == 0
    listed = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("maml ")]
    assert listed == [["maml", "(COLLISION)"], ["maml", "(COLLISION)"]]  # both, each marked
    command_copy = plugin(
        "commands",
        register_commands=lambda registry: registry.add(
            type(
                "Cmd",
                (),
                {
                    "name": "list",
                    "description": "another list",
                    "add_arguments": lambda self, p: None,
                    "run": lambda self, args: 0,
                },
            )()
        ),
    )
    monkeypatch.setattr(plugin_manager, "_cached", load_plugins(extra_plugins=(command_copy,)))
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["--help"])
    assert help_exit.value.code == 0
    assert cli.main(["list", "algorithms"]) == 2
    assert capsys.readouterr().err == (
        "harness: error: command 'list' is registered twice: by plugin 'harness.commands.list' and by plugin "
        "'commands'; leave one out with HARNESS_BLOCK_PLUGINS=commands\n"
    )


def test_unknown_names_in_the_allow_and_block_lists_are_warned_about_and_commands_always_load(monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "harness_plugins.algorithms.anil,anil")
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "harness.commands.run,maml")
    plugins = load_plugins()
    assert plugins.warnings == [
        "HARNESS_PLUGINS names 'anil', which is no plugin (harness plugins lists them)",
        "HARNESS_BLOCK_PLUGINS names 'maml', which is no plugin (harness plugins lists them)",
    ]
    assert plugins.algorithms.names() == ["anil"]
    assert {"run", "plugins", "list", "eval"} <= set(plugins.commands.names())  # built-in commands are never filtered


def test_an_entry_point_plugin_with_a_raising_hook_is_reported_by_its_entry_point(monkeypatch, tmp_path):
    (tmp_path / "raising_plugin_mod.py").write_text(
        "import harness\n\n@harness.hookimpl\ndef register_evaluators(registry):\n    raise KeyError('oops')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [importlib.metadata.EntryPoint(name="raising", value="raising_plugin_mod", group="harness")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == "harness" else [])
    plugins = load_plugins()
    (error,) = plugins.load_errors
    assert (error.plugin, error.source, error.error) == (
        "raising",
        "entry point raising = raising_plugin_mod",
        "register_evaluators raised KeyError: 'oops'",
    )
    assert "fewshot" in plugins.evaluators


@pytest.mark.parametrize("at", ["import", "registration"])
def test_a_plugin_that_calls_sys_exit_is_contained_like_any_failure(monkeypatch, tmp_path, at):
    body = (
        "import sys\nsys.exit(3)\n"
        if at == "import"
        else "import sys, harness\n\n@harness.hookimpl\ndef register_evaluators(registry):\n    sys.exit(3)\n"
    )
    (tmp_path / f"exiting_plugin_{at}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [importlib.metadata.EntryPoint(name="exiting", value=f"exiting_plugin_{at}", group="harness")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == "harness" else [])
    plugins = load_plugins()
    (error,) = plugins.load_errors
    assert error.plugin == "exiting" and error.error.endswith("SystemExit: 3")
    assert {"run", "plugins", "list"} <= set(plugins.commands.names()) and "fewshot" in plugins.evaluators


class Recorder:
    """A lifecycle plugin that keeps every call."""

    def __init__(self, name: str):
        self.calls: list[tuple] = []
        self.module = plugin(
            name,
            on_run_start=lambda run_dir, config: self.calls.append(("start",)),
            on_metrics=lambda run_dir, step, row: self.calls.append(("metrics", step, row["split"])),
            on_checkpoint=lambda run_dir, step, path: self.calls.append(("checkpoint", step, path.rsplit("/", 2)[-2:])),
            on_run_end=lambda run_dir, summary: self.calls.append(("end", sorted(summary))),
        )


def _raising_on_metrics(run_dir, step, row):
    raise ValueError("tracker offline")


@pytest.mark.realdata
def test_image_runs_call_every_lifecycle_hook_and_survive_one_that_raises(data_root, tmp_path, capsys):
    recorder = Recorder("recorder")
    plugins = load_plugins(extra_plugins=(plugin("tracker", on_metrics=_raising_on_metrics), recorder.module))
    config = small_config(plugins, data_root, iterations=10, log_every=5, val_every=5, checkpoint_every=10)
    summary = Trainer(config, plugins, tmp_path / "run", download=False, progress=False).train()
    assert summary["iterations"] == 10  # the run went on
    assert (
        capsys.readouterr().err.count(
            "harness: warning: plugin 'tracker' failed (on_metrics raised ValueError: "
            "tracker offline); it is disabled, the run goes on\n"
        )
        == 1
    )
    assert [e.plugin for e in plugins.load_errors] == ["tracker"]
    calls = recorder.calls
    assert calls[0] == ("start",) and calls[-1][0] == "end" and "test" in calls[-1][1]
    assert [c[1:] for c in calls if c[0] == "metrics"] == [(5, "train"), (5, "val"), (10, "train"), (10, "val")]
    checkpoints = [(c[1], "/".join(c[2])) for c in calls if c[0] == "checkpoint"]
    assert {(10, "checkpoints/step-0000010.pt"), (10, "run/checkpoint.pt"), (5, "run/checkpoint.pt")} <= set(
        checkpoints
    )
    assert any(path == "run/best.pt" for _, path in checkpoints)


def test_meta_rl_runs_call_every_lifecycle_hook_too(tmp_path):
    pytest.importorskip("gymnasium")
    recorder = Recorder("recorder")
    plugins = load_plugins(extra_plugins=(recorder.module,))
    env = plugins.environments.get("2d-navigation")
    config = RLConfig(
        algo="maml-rl",
        env="2d-navigation",
        **{
            **env.paper_defaults,
            "iterations": 2,
            "meta_batch_size": 2,
            "episodes_per_task": 2,
            "eval_tasks": 2,
            "checkpoint_every": 2,
        },
    )
    RLTrainer(config, plugins, tmp_path / "run", progress=False).train()
    kinds = [c[0] for c in recorder.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("metrics") == 2
    paths = {"/".join(c[2]) for c in recorder.calls if c[0] == "checkpoint"}
    assert {"run/checkpoint.pt", "run/best.pt", "checkpoints/step-0000002.pt"} <= paths


def test_an_object_missing_a_protocol_member_disables_its_plugin_at_load_time():
    half = type("Half", (), {"name": "half", "description": "", "train_step": lambda self, m, e, hp: {}})()
    plugins = load_plugins(extra_plugins=(plugin("halfway", register_algorithms=lambda registry: registry.add(half)),))
    assert [(e.plugin, e.error) for e in plugins.load_errors] == [
        (
            "halfway",
            "register_algorithms raised HarnessError: plugin 'halfway' registered algorithm 'half' without "
            "predict (harness/plugin/hookspecs.py, harness.plugin.protocols)",
        )
    ]
    assert "half" not in plugins.algorithms
