"""Plateau evidence from a run's own validation curve: is its accuracy still rising at the end of training?

Reads the validations in the run's ``metrics.jsonl`` and compares the last ``fraction`` of training with
the ``fraction`` before it (``harness.evaluation.plateau``): the gain in validation accuracy with its
95% interval, the verdict ``plateau`` (not significantly rising) and the iterations the curve reaches (a
budget that lengthens a run while it rises trains each run to its own length). Nothing is recomputed and no data
are read, so it costs nothing; the feature-reuse scoreboard shows it beside each algorithm, as the
evidence that a budget trained every algorithm to its plateau.

    harness eval RUN_DIR --evaluator plateau -o fraction=0.25
"""

from __future__ import annotations

import harness
from harness.evaluation.options import Option
from harness.evaluation.plateau import DEFAULT_FRACTION, plateau_gain, validation_curve


class Plateau:
    name = "plateau"
    description = "validation gain over the last part of training with its 95% CI: on its plateau or still rising"
    options = (
        Option(
            "fraction",
            "compare the last FRACTION of training with the FRACTION before",
            kind="float",
            default=DEFAULT_FRACTION,
        ),
    )

    def evaluate(self, run, options) -> dict:
        steps, accuracies = validation_curve(run.path)
        result = plateau_gain(steps, accuracies, options["fraction"])
        before, last = result["validations"]
        start, end = (round(s) for s in result["windows"]["last"])
        rows = [
            {
                "key": "gain",
                "name": f"validation gain, steps {start}-{end} over the {before} validations before",
                "mean": result["gain"],
                "ci95": result["ci95"],
                "tasks": run.config.val_tasks,
            },
            {
                "key": "last",
                "name": f"validation accuracy, steps {start}-{end} ({last} validations)",
                "mean": result["last"],
                "ci95": result["last_ci95"],
                "tasks": run.config.val_tasks,
            },
            {
                "key": "iterations",
                "name": "iterations trained, to the last validation",
                "mean": float(steps[-1]),
                "ci95": 0.0,
                "tasks": f"{len(steps)} validations",
            },
        ]
        return {"rows": rows, "plateau": result["plateau"], "windows": result["windows"], "steps": steps[-1]}


@harness.hookimpl
def register_evaluators(registry):
    registry.add(Plateau())
