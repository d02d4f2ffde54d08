"""``harness list``: every registered algorithm, backbone, task sampler, environment, evaluator and tracker."""

from tabulate import tabulate

import harness
from harness.evaluation.options import describe_options

KINDS = ("algorithms", "backbones", "task_samplers", "environments", "evaluators", "trackers")


class ListCommand:
    name = "list"
    description = "list algorithms, backbones, task samplers, environments, evaluators and trackers"

    def add_arguments(self, parser):
        parser.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
        parser.add_argument("--options", action="store_true", help="with evaluators: each one's -o KEY=VALUE options")

    def run(self, args) -> int:

        plugins = args.plugins
        for kind in [args.kind] if args.kind else KINDS:
            registry = plugins.registries[kind]
            colliding = registry.colliding_names()
            rows = [
                [name + (" (COLLISION)" if name in colliding else ""), obj.description, plugin]
                for name, obj, plugin in registry.items()
            ]
            print(f"{kind.replace('_', ' ')}:")
            print(tabulate(rows, headers=["name", "description", "plugin"], tablefmt="simple"))
            print()
            if kind == "evaluators" and args.options:
                for name, evaluator, _plugin in plugins.registries[kind].items():
                    print(f"{name} options (harness eval RUN_DIR --evaluator {name} -o KEY=VALUE):")
                    print(describe_options(evaluator))
                print()
        return 0


@harness.hookimpl
def register_commands(registry):
    registry.add(ListCommand())
