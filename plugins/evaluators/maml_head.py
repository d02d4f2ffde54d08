"""MAML head on a frozen body (Raghu et al. 2020, Section 5.2, Table 7 "MAML head").

The run's head is discarded; a fresh N-way head (zero-initialised, like the
backbones' own heads) is meta-trained with MAML's inner and outer loop on the
training tasks while the body stays frozen, then tested with the usual
inner-loop adaptation on the test tasks. Options (``-o KEY=VALUE``):
``head_iterations`` (default 500, a CPU budget; the paper trains the head to
convergence) and ``seed`` (default 0).

    harness eval RUN_DIR --evaluator maml-head -o head_iterations=2000
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.engine.meta_learning import Engine, adapt_and_predict
from harness.evaluation.activations import require_body_head
from harness.evaluation.fewshot import TEST_TASK_SEED, mean_and_ci95, per_task_accuracies
from harness.evaluation.options import NUM_TASKS, TEST_INNER_STEPS, Option

DEFAULT_HEAD_ITERATIONS = 500


def is_head(name: str) -> bool:
    return name.startswith("head.")


def train_maml_head(model: nn.Module, sampler, config, iterations: int, seed: int, device) -> nn.Module:
    """A copy of ``model`` with a new meta-trained N-way head; the body's weights are never changed."""
    model = copy.deepcopy(model)
    ways = sampler.ways
    model.head = nn.Linear(model.head.in_features, ways).to(device)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    for parameter in model.body.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=config.outer_lr)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        episodes = sampler.sample(config.meta_batch_size, rng).to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = adapt_and_predict(
            model, episodes, config.inner_steps, config.inner_lr, is_head, first_order=False, engine=Engine.of(config)
        )
        F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten()).backward()
        optimizer.step()
    return model


class MAMLHeadEvaluator:
    name = "maml-head"
    description = (
        "discard the head, meta-train a fresh head with MAML on the frozen body, test with adaptation (Table 7)"
    )
    options = (
        NUM_TASKS,
        TEST_INNER_STEPS,
        Option(
            "head_iterations",
            "meta-training iterations of the new head",
            kind="int",
            minimum=1,
            default=DEFAULT_HEAD_ITERATIONS,
        ),
        Option("seed", "seed of the head's training tasks", kind="int", minimum=0, default=0),
    )

    def evaluate(self, run, options) -> dict:
        require_body_head(run.model, f"evaluator {self.name!r}")
        iterations = options["head_iterations"]
        model = train_maml_head(run.model, run.open_split("train"), run.config, iterations, options["seed"], run.device)
        steps, lr = options["test_inner_steps"], run.config.inner_lr
        accuracies = per_task_accuracies(
            lambda episodes: adapt_and_predict(
                model, episodes, steps, lr, is_head, first_order=True, engine=Engine.of(run.config)
            ),
            run.open_split("test"),
            options["num_tasks"],
            TEST_TASK_SEED,
            run.config.eval_batch_size,
            run.device,
        )
        mean, ci95 = mean_and_ci95(accuracies)
        return {
            "rows": [
                {
                    "name": f"{run.config.algo} body, MAML head ({iterations} head iterations)",
                    "mean": mean,
                    "ci95": ci95,
                    "tasks": len(accuracies),
                }
            ],
            "head_iterations": iterations,
        }


@harness.hookimpl
def register_evaluators(registry):
    registry.add(MAMLHeadEvaluator())
