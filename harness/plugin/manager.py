"""Loading plugins: the built-in list, the ``harness`` entry points, and filters.

Environment variables (comma-separated plugin names, as ``harness plugins``
prints them):

- ``HARNESS_PLUGINS``: allow-list; only these plugins load, besides the
  built-in commands, which always do (``harness plugins`` and ``--help`` keep
  working whatever the lists say);
- ``HARNESS_BLOCK_PLUGINS``: these plugins never load (built-in commands aside).

A name in either list that matches no plugin is warned about. Failures are
contained to the plugin that fails, which is reported by name (on stderr and
by ``harness plugins``) and disabled while the others go on: one that fails to
import, defines a hook that does not exist (a misspelt ``register_algorithm``),
or whose registration hook raises; a lifecycle hook (``on_metrics`` ...) that
raises during a run is disabled for the rest of the run, which continues. Two
plugins registering one name is an error only where that name is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from harness.errors import HarnessError
from harness.plugin import hookspecs
from harness.plugin.protocols import Algorithm, Backbone, Command, Environment, Evaluator, TaskSampler, Tracker
from harness.plugin.registry import Registry

ENTRY_POINT_GROUP = "harness"

#: Bundled plugins that need an optional extra: module -> (packages, extra). Without the
#: packages they are left out quietly and ``harness plugins`` says which extra to install.
OPTIONAL_BUILTINS = {
    "harness_plugins.envs.navigation": ({"gymnasium"}, "rl"),
    "harness_plugins.envs.halfcheetah": ({"gymnasium", "mujoco"}, "rl"),
}

#: The bundled plugins, in registration order: commands, then backbones, data sets, algorithms,
#: environments, evaluators and trackers. A new bundled module is added here (``tests/test_architecture.py``
#: fails on a module of these packages that implements a hook and is missing).
BUILTIN_PLUGINS = (
    "harness.commands.eval.analyze",
    "harness.commands.bench",
    "harness.commands.check",
    "harness.commands.eval",
    "harness.commands.list",
    "harness.commands.plugins",
    "harness.commands.report",
    "harness.commands.reproduce",
    "harness.commands.run",
    "harness_plugins.backbones.conv4",
    "harness_plugins.backbones.resnet12",
    "harness_plugins.datasets.cifar100",
    "harness_plugins.datasets.cub",
    "harness_plugins.datasets.miniimagenet",
    "harness_plugins.datasets.omniglot",
    "harness_plugins.datasets.tieredimagenet",
    "harness_plugins.algorithms.anil",
    "harness_plugins.algorithms.boil",
    "harness_plugins.algorithms.fomaml",
    "harness_plugins.algorithms.maml",
    "harness_plugins.algorithms.maml_plus_plus",
    "harness_plugins.algorithms.meta_rl",
    "harness_plugins.algorithms.meta_sgd",
    "harness_plugins.algorithms.protonet",
    "harness_plugins.algorithms.regimes",
    "harness_plugins.algorithms.unicorn_maml",
    "harness_plugins.envs.halfcheetah",
    "harness_plugins.envs.navigation",
    "harness_plugins.evaluators.fewshot",
    "harness_plugins.evaluators.freeze",
    "harness_plugins.evaluators.maml_head",
    "harness_plugins.evaluators.nil",
    "harness_plugins.evaluators.plateau",
    "harness_plugins.evaluators.representations",
    "harness_plugins.evaluators.step_time",
    "harness_plugins.trackers.mlflow",
    "harness_plugins.trackers.tensorboard",
    "harness_plugins.trackers.wandb",
)

#: What a plugin's import or hook may raise and still be contained to that plugin: any exception, and
#: SystemExit (a plugin calling sys.exit must not silence every command); Ctrl-C still interrupts.
PLUGIN_FAILURES = (Exception, SystemExit)


def builtin_plugins() -> tuple[str, ...]:
    """The bundled plugin modules (:data:`BUILTIN_PLUGINS`), importable from a source checkout too."""
    ensure_bundled_package()
    return BUILTIN_PLUGINS


REGISTRY_HOOKS = {
    "algorithms": ("register_algorithms", "algorithm"),
    "backbones": ("register_backbones", "backbone"),
    "task_samplers": ("register_task_samplers", "task sampler"),
    "environments": ("register_environments", "environment"),
    "evaluators": ("register_evaluators", "evaluator"),
    "trackers": ("register_trackers", "tracker"),
    "commands": ("register_commands", "command"),
}


@dataclass
class LoadError:
    plugin: str
    source: str  # "builtin" or "entry point name = module:attr"
    error: str


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    registries: dict[str, Registry[Any]]
    load_errors: list[LoadError] = field(default_factory=list)
    missing_extras: dict[str, str] = field(default_factory=dict)  # bundled plugin -> how to install what it needs
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> where it came from
    warnings: list[str] = field(default_factory=list)

    @property
    def hook(self):
        return self.manager.hook

    def disable(self, name: str, error: str) -> None:
        """Unregister plugin ``name`` and forget what it registered; it is reported as failed."""
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin, name=name)
        for registry in self.registries.values():
            registry.remove_plugin(name)
        self.load_errors.append(LoadError(name, self.sources.pop(name, "?"), error))

    def notify(self, hook_name: str, **kwargs) -> None:
        """Call every plugin's lifecycle hook ``hook_name`` (``on_run_start``, ``on_metrics``, ...).

        Each implementation is called on its own so that one that raises can be reported by name
        and disabled while the run and the other plugins go on (pluggy's hook call would stop at
        the first exception and end the run).
        """
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():  # registration order
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except PLUGIN_FAILURES as exc:
                name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
                error = f"{hook_name} raised {type(exc).__name__}: {exc}"
                print(
                    f"harness: warning: plugin {name!r} failed ({error}); it is disabled, the run goes on",
                    file=sys.stderr,
                )
                self.disable(name, error)

    @property
    def algorithms(self) -> Registry[Algorithm]:
        return self.registries["algorithms"]

    @property
    def backbones(self) -> Registry[Backbone]:
        return self.registries["backbones"]

    @property
    def task_samplers(self) -> Registry[TaskSampler]:
        return self.registries["task_samplers"]

    @property
    def environments(self) -> Registry[Environment]:
        return self.registries["environments"]

    @property
    def evaluators(self) -> Registry[Evaluator]:
        return self.registries["evaluators"]

    @property
    def trackers(self) -> Registry[Tracker]:
        return self.registries["trackers"]

    @property
    def commands(self) -> Registry[Command]:
        return self.registries["commands"]


def ensure_bundled_package() -> None:
    """Make ``harness_plugins`` importable from a source checkout.

    An install maps ``plugins/`` to ``harness_plugins``; a plain checkout has
    only the folder, so bind it under the same name.
    """
    if "harness_plugins" in sys.modules or importlib.util.find_spec("harness_plugins") is not None:
        return
    folder = Path(__file__).resolve().parents[2] / "plugins"
    spec = importlib.util.spec_from_file_location(
        "harness_plugins", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - broken checkout
        raise HarnessError(f"bundled plugins not found at {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness_plugins"] = module
    spec.loader.exec_module(module)


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins(extra_plugins: tuple = ()) -> Plugins:
    """Build a plugin manager with built-ins, entry points and ``extra_plugins``."""
    manager = pluggy.PluginManager("harness")
    manager.add_hookspecs(hookspecs)
    allowed = _names_from_env("HARNESS_PLUGINS")
    blocked = _names_from_env("HARNESS_BLOCK_PLUGINS") or set()
    plugins = Plugins(manager=manager, registries={})

    def wanted(name: str) -> bool:
        if name.startswith("harness.commands."):
            return True  # harness plugins and --help must work whatever the lists say
        return name not in blocked and (allowed is None or name in allowed)

    _register_builtins(plugins, wanted)
    _register_entry_points(plugins, wanted)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or repr(plugin)
        manager.register(plugin, name=name)
        plugins.sources[name] = "registered in code"

    known = set(builtin_plugins()) | {e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for variable, names in (("HARNESS_PLUGINS", allowed or set()), ("HARNESS_BLOCK_PLUGINS", blocked)):
        for name in sorted(names - known):
            plugins.warnings.append(f"{variable} names {name!r}, which is no plugin (harness plugins lists them)")

    for name, error in _unknown_hooks(manager).items():
        plugins.disable(name, error)
    _fill_registries(plugins)
    return plugins


def _register_builtins(plugins: Plugins, wanted) -> None:
    """Import and register each bundled plugin; a missing optional extra is noted, a failure contained."""
    for module_name in builtin_plugins():
        if not wanted(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            packages, extra = OPTIONAL_BUILTINS.get(module_name, (set(), None))
            if exc.name not in packages:
                plugins.load_errors.append(LoadError(module_name, "builtin", f"{type(exc).__name__}: {exc}"))
            else:
                plugins.missing_extras[module_name] = f"pip install 'feature-reuse-harness[{extra}]' (needs {exc.name})"
            continue
        except PLUGIN_FAILURES as exc:  # a broken bundled plugin must not hide the others
            plugins.load_errors.append(LoadError(module_name, "builtin", f"{type(exc).__name__}: {exc}"))
            continue
        plugins.manager.register(module, name=module_name)
        plugins.sources[module_name] = "builtin"


def _register_entry_points(plugins: Plugins, wanted) -> None:
    """Load and register each ``harness`` entry point; a failure is contained to its plugin."""
    manager = plugins.manager
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry_point.name} = {entry_point.value}"
        if not wanted(entry_point.name):
            continue
        if manager.has_plugin(entry_point.name):
            plugins.load_errors.append(LoadError(entry_point.name, source, "a plugin with this name is already loaded"))
            continue
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except PLUGIN_FAILURES as exc:
            plugins.load_errors.append(LoadError(entry_point.name, source, f"{type(exc).__name__}: {exc}"))
            continue
        plugins.sources[entry_point.name] = source


def _fill_registries(plugins: Plugins) -> None:
    """Call every registration hook; a plugin whose hook raises is disabled with what it registered."""
    manager = plugins.manager
    plugins.registries = {key: Registry(kind) for key, (_hook, kind) in REGISTRY_HOOKS.items()}
    failed: dict[str, str] = {}
    for key, (hook_name, _kind) in REGISTRY_HOOKS.items():
        registry = plugins.registries[key]
        # Each implementation is called on its own, so the registry knows which plugin registered
        # what (for collisions) and a registration hook that raises disables only its plugin.
        for impl in getattr(manager.hook, hook_name).get_hookimpls():  # registration order
            name = manager.get_name(impl.plugin) or repr(impl.plugin)
            if name in failed:
                continue
            registry.current_plugin = name
            try:
                impl.function(registry=registry)
            except PLUGIN_FAILURES as exc:
                failed[name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
        registry.current_plugin = "<unknown>"
    for name, error in failed.items():
        plugins.disable(name, error)


def _unknown_hooks(manager: pluggy.PluginManager) -> dict[str, str]:
    """Plugins defining a ``@harness.hookimpl`` that no hook spec has (pluggy's ``check_pending``, per plugin)."""
    import difflib

    specified = [name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "harness_spec", None)]
    unknown = {}
    for name, plugin in manager.list_name_plugin():
        for attribute in dir(plugin):
            if manager.parse_hookimpl_opts(plugin, attribute) is not None and attribute not in specified:
                close = difflib.get_close_matches(attribute, specified, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; hooks: {', '.join(sorted(specified))}"
                unknown[name] = f"defines hook {attribute!r}, which does not exist{hint}"
    return unknown


_cached: Plugins | None = None


def get_plugins(refresh: bool = False) -> Plugins:
    """The process-wide plugins (loaded once)."""
    global _cached
    if _cached is None or refresh:
        _cached = load_plugins()
    return _cached


def report_load_errors(plugins: Plugins, stream=None) -> None:
    stream = stream or sys.stderr
    for warning in plugins.warnings:
        print(f"harness: warning: {warning}", file=stream)
    for error in plugins.load_errors:
        print(f"harness: warning: plugin {error.plugin!r} ({error.source}) failed to load: {error.error}", file=stream)
