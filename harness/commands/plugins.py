"""``harness plugins``: every loaded plugin, where it came from and what it registers."""

import json

from tabulate import tabulate

import harness
from harness.plugin.manager import REGISTRY_HOOKS


def describe_plugins(plugins) -> list[dict]:
    described = {name: {"name": name, "source": source, "registers": {}} for name, source in plugins.sources.items()}
    for kind in REGISTRY_HOOKS:
        for name, _obj, plugin in plugins.registries[kind].items():
            described.setdefault(plugin, {"name": plugin, "source": "?", "registers": {}})
            described[plugin]["registers"].setdefault(kind, []).append(name)
    for name, entry in described.items():
        hooks: list[str] = []
        plugin = plugins.manager.get_plugin(name)
        if plugin is not None:
            hooks = sorted(caller.name for caller in plugins.manager.get_hookcallers(plugin) or [])
        entry["hooks"] = hooks
    return sorted(described.values(), key=lambda entry: (entry["source"] != "builtin", entry["name"]))


class PluginsCommand:
    name = "plugins"
    description = "list loaded plugins, their source (builtin or entry point) and what they register"

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args) -> int:

        plugins = args.plugins
        entries = describe_plugins(plugins)
        errors = [{"name": e.plugin, "source": e.source, "error": e.error} for e in plugins.load_errors]
        collisions = [c for kind in REGISTRY_HOOKS for c in plugins.registries[kind].collisions()]
        if args.json:
            print(
                json.dumps(
                    {
                        "plugins": entries,
                        "failed": errors,
                        "not_installed": plugins.missing_extras,
                        "collisions": collisions,
                    },
                    indent=2,
                )
            )
            return 0
        rows = [
            [
                e["name"],
                e["source"],
                "; ".join(f"{k}: {', '.join(v)}" for k, v in e["registers"].items()) or ", ".join(e["hooks"]),
            ]
            for e in entries
        ]
        print(tabulate(rows, headers=["plugin", "source", "registers"], tablefmt="simple"))
        for name, how in plugins.missing_extras.items():
            print(f"not loaded {name}: {how}")
        for error in errors:
            print(f"FAILED {error['name']} ({error['source']}): {error['error']}")
        for collision in collisions:
            print(f"COLLISION {collision}")
        return 0


@harness.hookimpl
def register_commands(registry):
    registry.add(PluginsCommand())
