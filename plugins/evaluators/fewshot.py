"""The standard few-shot test: adapt with the run's own algorithm, score the query set.

harness eval RUN_DIR                      # 600 test tasks, 95% CI
harness eval RUN_DIR --test-inner-steps 5 # same tasks, fewer adaptation steps
"""

import harness
from harness.evaluation.fewshot import TEST_TASK_SEED, evaluate
from harness.evaluation.options import NUM_TASKS, TEST_INNER_STEPS, Option


class FewShotEvaluator:
    name = "fewshot"
    description = "adapt with the run's algorithm on each test task's support set; query accuracy with 95% CI"
    options = (
        NUM_TASKS,
        TEST_INNER_STEPS,
        Option("split", "which split's tasks", choices=("train", "val", "test"), default="test"),
    )

    def evaluate(self, run, options) -> dict:
        config = run.config
        config.test_inner_steps = options["test_inner_steps"]
        sampler = run.open_split(options["split"])
        result = evaluate(run.algorithm, run.model, sampler, config, options["num_tasks"], TEST_TASK_SEED, run.device)
        return {
            "rows": [
                {
                    "name": f"{config.algo} ({config.test_inner_steps} inner steps)",
                    "mean": result["accuracy"],
                    "ci95": result["ci95"],
                    "tasks": result["tasks"],
                }
            ]
        }


@harness.hookimpl
def register_evaluators(registry):
    registry.add(FewShotEvaluator())
