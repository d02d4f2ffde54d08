"""Seconds per training iteration of a trained run's algorithm at its own settings, measured now.

A run's ``summary.json`` records the time its training took, but that time counts whatever shared
the machine with it (other runs, a test suite, a pause). This evaluator times the step again: one
warm-up and ``steps`` timed training steps (a meta-batch at the run's settings, drawn from its
training split; forward, inner loop, meta-gradient, no optimiser state touched) on a copy of the
network and of the algorithm's own parameters, and reports the median. For the scoreboard's
seconds-per-iteration column (``experiments/feature-reuse.toml``), measured with nothing else
running.

    harness eval RUN_DIR --evaluator step-time -o steps=5
"""

from __future__ import annotations

import copy
import statistics

import numpy as np
import torch

import harness
from harness.errors import HarnessError
from harness.evaluation.options import Option
from harness.speed.benchmarks import interleaved_times

SEED = 7  # the measured batches: the same for every run


class StepTime:
    name = "step-time"
    description = "median seconds of one training iteration at the run's settings, timed now (not the run's own log)"
    options = (Option("steps", "timed steps after one warm-up", kind="int", minimum=1, default=3),)

    def evaluate(self, run, options) -> dict:
        algorithm = run.algorithm
        if algorithm.batch_kind != "episodes" or not algorithm.trains:
            raise HarnessError(f"evaluator 'step-time' times episodic training; {run.config.algo!r} does not train so")
        model = copy.deepcopy(run.model)
        algorithm = copy.deepcopy(algorithm) if algorithm.owns_parameters else algorithm
        batch = run.open_split("train").sample(run.config.meta_batch_size, np.random.default_rng(SEED)).to(run.device)

        def step():
            model.zero_grad(set_to_none=True)
            algorithm.train_step(model, batch, run.config)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)

        seconds = interleaved_times({"step": step}, options["steps"])["step"]  # after one warm-up
        median = statistics.median(seconds)
        row = {
            "name": f"{run.config.algo} training step",
            "mean": median,
            "ci95": 0.0,
            "tasks": f"{len(seconds)} steps",
        }
        return {"rows": [row], "seconds": seconds, "meta_batch_size": run.config.meta_batch_size}


@harness.hookimpl
def register_evaluators(registry):
    registry.add(StepTime())
