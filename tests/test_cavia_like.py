"""An algorithm from outside the package that changes the model it trains: CAVIA (Zintgraf et al. 2019), whose
inner loop adapts only a context vector added to the body's features, reset to zero for every task.

Written against the public API only (``harness.GradientMetaLearner``, ``prepare_model``, ``adapts``,
``initial_parameters``, ``inner_lr_transfers``) and registered like a third-party plugin: it trains, resumes
exactly, comes back from its checkpoint with its context, and the evaluators report the context.
"""

from __future__ import annotations

import types

import pytest
import torch
from test_runs import small_config
from torch import nn

import harness
from harness.errors import HarnessError
from harness.evaluation.options import resolve_options
from harness.plugin.manager import load_plugins
from harness.run.loaded_run import load_run
from harness.run.training import Trainer


class Context(nn.Module):
    """Adds a learned vector to the body's features ``[batch, features]``."""

    def __init__(self, features: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        return x + self.vector


class CAVIALike(harness.GradientMetaLearner):
    name = "cavia-like"
    description = "CAVIA: the inner loop adapts only a context vector added to the body's features"
    inner_lr_transfers = False  # its --inner-lr is a step on the context, not on weights

    def prepare_model(self, model):
        model.body.append(Context(model.head.in_features))  # body.<last>: a layer of its own
        return model

    def adapts(self, parameter_name: str) -> bool:
        return parameter_name.endswith(".vector")

    def initial_parameters(self, model, ways):
        return {name: torch.zeros_like(p) for name, p in model.named_parameters() if self.adapts(name)}


def plugin():
    module = types.ModuleType("cavia_like_plugin")
    module.register_algorithms = harness.hookimpl(lambda registry: registry.add(CAVIALike()))
    return module


@pytest.mark.realdata
def test_a_model_changing_algorithm_trains_resumes_and_is_evaluated_through_its_context(data_root, tmp_path):
    plugins = load_plugins(extra_plugins=(plugin(),))
    config = small_config(plugins, data_root, algo="cavia-like", iterations=6, log_every=3, val_every=3, inner_lr=1.0)
    straight = Trainer(config, plugins, tmp_path / "straight", download=False, progress=False)
    summary = straight.train()
    context_layer = f"body.{len(straight.model.body) - 1}"
    assert straight.inner_loop["path"] == "generic"  # the context layer has no side-by-side rule: vmap

    first = small_config(plugins, data_root, algo="cavia-like", iterations=3, log_every=3, val_every=3, inner_lr=1.0)
    Trainer(first, plugins, tmp_path / "resumed", download=False, progress=False).train()
    resumed = Trainer(config, plugins, tmp_path / "resumed", download=False, progress=False)
    resumed.restore()
    assert resumed.train()["test"] == summary["test"]  # the same numbers as without the stop

    run = load_run(tmp_path / "straight", plugins)
    run.data_root, run.download = data_root, False
    assert isinstance(run.model.body[-1], Context)  # rebuilt as it trained, its context from the checkpoint

    def evaluate(name, **given):
        evaluator = plugins.evaluators.get(name)
        return evaluator.evaluate(run, resolve_options(evaluator, given, run, None))

    assert evaluate("fewshot", num_tasks=config.test_tasks)["rows"][0]["mean"] == pytest.approx(
        summary["test"]["accuracy"], abs=1e-12
    )
    distances = {row["layer"]: row["mean"] for row in evaluate("weight-distance", num_tasks=2)["rows"]}
    assert distances[context_layer] > 0 and distances["body.0"] == distances["head"] == 0.0
    similarity_layers = {row["layer"] for row in evaluate("similarity", num_tasks=2)["rows"]}
    assert any(layer.startswith(context_layer) for layer in similarity_layers)
    with pytest.raises(HarnessError, match="adapt_as=maml: the run's --inner-lr 1.0 is cavia-like's step"):
        evaluate("weight-distance", num_tasks=2, adapt_as="maml")
    assert evaluate("weight-distance", num_tasks=2, adapt_as="maml", adapt_lr=0.4)["rows"][0]["mean"] > 0
