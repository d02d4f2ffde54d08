"""Few-shot evaluation: fixed task sets, mean accuracy and 95% confidence interval.

Task ``i`` of a task set is drawn from its own generator seeded with
``(set_seed, i)``, so every run, algorithm and chunk size sees exactly the
same validation and test tasks (paired comparisons, as in the paper's tables).
The interval is ``1.96 * std / sqrt(n)`` over per-task accuracies (sample
standard deviation), the convention of Finn et al. (2017) and Raghu et al.
(2020) with their 600 test tasks.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from harness.data.episodes import Episodes
from harness.engine.meta_learning import Engine, adapt_and_predict, query_accuracy
from harness.errors import HarnessError

VAL_TASK_SEED = 1
TEST_TASK_SEED = 2
#: Whether task-set evaluations draw a progress bar with the time left (on a terminal).
_SHOW_PROGRESS: ContextVar[bool] = ContextVar("harness_evaluation_progress", default=False)


@contextmanager
def progress_shown(enabled: bool = True) -> Iterator[None]:
    """Evaluations inside show tasks done and time left on stderr (``harness eval``, a run's test)."""
    token = _SHOW_PROGRESS.set(enabled)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def fixed_tasks(sampler, start: int, stop: int, set_seed: int) -> Episodes:
    """Tasks ``start..stop-1`` of the task set ``set_seed`` as one meta-batch."""
    parts = [sampler.sample(1, np.random.default_rng([set_seed, index])) for index in range(start, stop)]
    return Episodes(
        torch.cat([p.support_x for p in parts]),
        torch.cat([p.support_y for p in parts]),
        torch.cat([p.query_x for p in parts]),
        torch.cat([p.query_y for p in parts]),
        parts[0].ways,
    )


def mean_and_ci95(accuracies: np.ndarray) -> tuple[float, float]:
    n = len(accuracies)
    mean = float(np.mean(accuracies))
    if n < 2:
        return mean, float("nan")
    return mean, float(1.96 * np.std(accuracies, ddof=1) / math.sqrt(n))


def per_task_accuracies(predict, sampler, num_tasks: int, set_seed: int, chunk: int, device) -> np.ndarray:
    """``predict(episodes) -> logits`` on ``num_tasks`` fixed tasks, chunked for memory."""
    from tqdm import tqdm

    results = []
    shown = None if _SHOW_PROGRESS.get() else True  # None: drawn on a terminal only
    with torch.no_grad(), tqdm(total=num_tasks, desc="evaluating", unit="task", file=sys.stderr, disable=shown) as bar:
        for start in range(0, num_tasks, chunk):
            episodes = fixed_tasks(sampler, start, min(start + chunk, num_tasks), set_seed).to(device)
            logits = predict(episodes)  # [tasks, ways*queries, ways]
            results.append(query_accuracy(logits, episodes.query_y).cpu())
            bar.update(episodes.query_y.shape[0])
    return torch.cat(results).numpy()


def evaluate(algorithm, model, sampler, config, num_tasks: int, set_seed: int, device) -> dict:
    accuracies = per_task_accuracies(
        lambda episodes: algorithm.predict(model, episodes, config),
        sampler,
        num_tasks,
        set_seed,
        config.eval_batch_size,
        device,
    )
    mean, ci95 = mean_and_ci95(accuracies)
    return {"accuracy": mean, "ci95": ci95, "tasks": int(num_tasks), "inner_steps": config.test_inner_steps}


def adapt_with(algorithm, model, episodes: Episodes, steps: int, hp, frozen=frozenset(), return_adapted: bool = False):
    """``algorithm``'s own inner loop at evaluation (first order: no outer backward pass follows).

    Every evaluator adapts through this, so an algorithm with its own step sizes (Meta-SGD) or its
    own ``adapt`` is evaluated as it trains; ``frozen`` names stay at the meta-initialisation.
    An algorithm with ``adapts`` but no ``adapt`` gets the shared inner loop with ``hp.inner_lr``.
    """
    if algorithm.adapt is not None:
        return algorithm.adapt(
            model, episodes, steps, hp, first_order=True, frozen=frozen, return_adapted=return_adapted
        )
    if algorithm.adapts is None:
        raise HarnessError(f"algorithm {algorithm.name!r} has no inner loop (no adapt() or adapts() method)")
    return adapt_and_predict(
        model,
        episodes,
        steps,
        algorithm.inner_lr(hp),
        lambda name: algorithm.adapts(name) and name not in frozen,
        True,
        return_adapted,
        Engine.of(hp),
    )


def inner_loop_algorithm(run, options: dict):
    """The algorithm whose test-time inner loop an evaluator runs: the run's own, or ``-o adapt_as=NAME``.

    ``adapt_as=maml`` adapts every layer (MAML's inner loop) on any trained network, e.g. an
    ANIL-trained one, whose own inner loop leaves the body untouched by construction: does
    the body change when it is allowed to (Raghu et al. 2020, Figure 2 / Table 1 on ANIL)?
    """
    name, lr = options.get("adapt_as"), options.get("adapt_lr")
    if not name:
        if lr is not None:
            raise HarnessError("adapt_lr is the inner learning rate of adapt_as; give adapt_as too")
        return run.algorithm
    from harness.plugin.manager import get_plugins

    algorithm = get_plugins().algorithms.get(str(name))  # an unknown name lists the valid ones
    if algorithm.adapts is None:
        raise HarnessError(f"adapt_as={name}: algorithm {name!r} has no inner loop (no adapts() method)")
    if algorithm.owns_parameters:
        raise HarnessError(
            f"adapt_as={name}: {name!r} adapts with parameters it learns in each run (for_run); "
            f"evaluate a run trained with it instead"
        )
    if lr is None and not run.algorithm.inner_lr_transfers:
        raise HarnessError(
            f"adapt_as={name}: the run's --inner-lr {run.config.inner_lr} is {run.config.algo}'s step on its own "
            f"parameters, not on weights; give the inner learning rate with -o adapt_lr=X"
        )
    return algorithm if lr is None else _with_inner_lr(algorithm, float(lr))


def _with_inner_lr(algorithm, lr: float):
    """A copy of the registered ``algorithm`` whose inner loop steps with ``lr`` whatever the run's config says."""
    adapted = copy.copy(algorithm)
    adapted.inner_lr = lambda hp: lr
    return adapted
