"""``harness analyze``: representation analyses (CCA/CKA, weight distance, seeds) on run directories.

    harness analyze similarity RUN_DIR [--against OTHER_RUN] --measure cca|svcca|cka|cka-unbiased
    harness analyze weights RUN_DIR [--adapt-as maml]
    harness analyze seeds RUN_SEED_A --against RUN_SEED_B

Each analysis is an evaluator plugin (``harness list evaluators``); this
command picks it, prints its table and writes JSON and PNG into RUN_DIR.
"""

from __future__ import annotations

import harness
from harness.commands.eval import evaluate_and_write
from harness.evaluation.similarity import MEASURES
from harness.run.devices import DEVICE_CHOICES
from harness.run.provenance import given_suffix

ANALYSES = {"similarity": "similarity", "weights": "weight-distance", "seeds": "seed-similarity"}


class AnalyzeCommand:
    name = "analyze"
    description = "representation analyses: similarity (pre vs post, or --against a run), weights, seeds"

    def add_arguments(self, parser):
        parser.add_argument("analysis", choices=sorted(ANALYSES))
        parser.add_argument("run_dir", metavar="RUN_DIR")
        parser.add_argument("--against", metavar="OTHER_RUN", help="second run (another algorithm, regime or seed)")
        parser.add_argument(
            "--measure", choices=sorted(MEASURES), default=None, help="similarity measure (default cca)"
        )
        parser.add_argument("--tasks", type=int, default=None, help="test tasks to average over (default 50)")
        parser.add_argument("--queries", type=int, default=None, help="query images per class (default 15)")
        parser.add_argument("--test-inner-steps", type=int, default=None, help="inner steps (default: the run's)")
        parser.add_argument(
            "--adapt-as",
            metavar="ALGO",
            default=None,
            help="adapt with ALGO's inner loop instead of the run's (maml: every layer; for an ANIL-trained network)",
        )
        parser.add_argument("--data-root", default=None)
        parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
        parser.add_argument("--no-download", action="store_true")

    def run(self, args) -> int:

        plugins = args.plugins
        name = ANALYSES[args.analysis]
        if args.analysis == "similarity" and args.against:
            name = "run-similarity"
        evaluator = plugins.evaluators.get(name)
        given = {
            "measure": args.measure,
            "num_tasks": args.tasks,
            "queries": args.queries,
            "test_inner_steps": args.test_inner_steps,
            "adapt_as": args.adapt_as,
            "against": args.against,
        }
        flags = {
            "measure": "--measure",
            "num_tasks": "--tasks",
            "queries": "--queries",
            "test_inner_steps": "--test-inner-steps",
            "adapt_as": "--adapt-as",
            "against": "--against",
        }

        def file_stem(options: dict, given: dict) -> str:
            measure = f"-{options['measure']}" if "measure" in options else ""
            adapt_as = f"-adapt-as-{args.adapt_as}" if args.adapt_as else ""
            return f"analysis-{evaluator.name}{measure}{adapt_as}{given_suffix(given, skip=('measure', 'adapt_as'))}"

        result, out = evaluate_and_write(plugins, evaluator, args, given, flags, file_stem, percent=False)
        print(f"written to {out} and {result['figure']}")
        return 0


@harness.hookimpl
def register_commands(registry):
    registry.add(AnalyzeCommand())
