"""NIL evaluator (Raghu et al. 2020, Section 5.1, Table 4): the body alone, no inner loop.

harness eval RUN_DIR --evaluator nil
"""

import harness
from harness.engine.meta_learning import Engine
from harness.evaluation.activations import require_body_head
from harness.evaluation.fewshot import TEST_TASK_SEED, mean_and_ci95, per_task_accuracies
from harness.evaluation.nil import nil_predict
from harness.evaluation.options import NUM_TASKS


class NILEvaluator:
    name = "nil"
    description = "NIL: remove the head, classify queries by cosine similarity to support features (no inner loop)"
    options = (NUM_TASKS,)

    def evaluate(self, run, options) -> dict:
        require_body_head(run.model, f"evaluator {self.name!r}")
        accuracies = per_task_accuracies(
            lambda episodes: nil_predict(run.model, episodes, Engine.of(run.config)),
            run.open_split("test"),
            options["num_tasks"],
            TEST_TASK_SEED,
            run.config.eval_batch_size,
            run.device,
        )
        mean, ci95 = mean_and_ci95(accuracies)
        return {
            "rows": [
                {"name": f"{run.config.algo} body, NIL head", "mean": mean, "ci95": ci95, "tasks": len(accuracies)}
            ]
        }


@harness.hookimpl
def register_evaluators(registry):
    registry.add(NILEvaluator())
