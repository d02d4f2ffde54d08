"""A plugin from outside the package with parameters of its own trains, resumes and is evaluated, core untouched.

The algorithm below learns one inner step size per parameter tensor (a per-layer Meta-SGD, as
in Antoniou et al.'s LSLR without the per-step part). It is written only against the public
API (``harness.GradientMetaLearner``, ``for_run``, ``inner_lr``) and registered like any
third-party plugin; every evaluator must then adapt with its learned step sizes.
"""

from __future__ import annotations

import types

import pytest
import torch
from test_runs import small_config

import harness
from harness.evaluation.options import resolve_options
from harness.plugin.manager import load_plugins
from harness.run.files import load_torch
from harness.run.loaded_run import load_run
from harness.run.training import Trainer


class PerLayerRates(torch.nn.Module, harness.GradientMetaLearner):
    name = "per-layer-rates"
    description = "MAML with one learned inner step size per parameter tensor"

    def __init__(self, names=(), initial=0.0):
        super().__init__()
        self.log_rates = torch.nn.ParameterDict(
            {n.replace(".", ":"): torch.nn.Parameter(torch.tensor(float(initial)).log()) for n in names}
        )

    def for_run(self, model, hp):
        return PerLayerRates([n for n, _ in model.named_parameters()], hp.inner_lr)

    def inner_lr(self, hp):
        return {n.replace(":", "."): r.exp() for n, r in self.log_rates.items()}


def plugin():
    module = types.ModuleType("per_layer_rates_plugin")
    module.register_algorithms = harness.hookimpl(lambda registry: registry.add(PerLayerRates()))
    return module


@pytest.mark.realdata
def test_an_outside_algorithm_with_its_own_parameters_trains_resumes_and_is_evaluated_its_way(data_root, tmp_path):
    plugins = load_plugins(extra_plugins=(plugin(),))
    config = small_config(plugins, data_root, algo="per-layer-rates", iterations=6, log_every=3, val_every=3)
    straight = Trainer(config, plugins, tmp_path / "straight", download=False, progress=False)
    summary = straight.train()
    rates = straight.algorithm.inner_lr(config)
    assert any(abs(float(r.detach()) - config.inner_lr) > 1e-6 for r in rates.values())  # learned by the outer loop

    first = small_config(plugins, data_root, algo="per-layer-rates", iterations=3, log_every=3, val_every=3)
    Trainer(first, plugins, tmp_path / "resumed", download=False, progress=False).train()
    resumed = Trainer(config, plugins, tmp_path / "resumed", download=False, progress=False)
    resumed.restore()
    assert resumed.train()["test"] == summary["test"]
    for name, value in load_torch(tmp_path / "straight" / "checkpoint.pt")["algorithm"].items():
        assert torch.equal(value, load_torch(tmp_path / "resumed" / "checkpoint.pt")["algorithm"][name])

    run = load_run(tmp_path / "straight", plugins)
    run.data_root, run.download = data_root, False
    assert isinstance(run.algorithm, PerLayerRates)  # its learned rates came back with the checkpoint

    def evaluate(name, **given):
        evaluator = plugins.evaluators.get(name)
        return evaluator.evaluate(run, resolve_options(evaluator, given, run, None))

    frozen_nothing = evaluate("freeze", layers="none", num_tasks=config.test_tasks)["rows"][0]["mean"]
    assert frozen_nothing == pytest.approx(summary["test"]["accuracy"], abs=1e-12)  # its own inner loop, its rates
    with torch.no_grad():  # the evaluators really use the rates: other rates, other adaptation
        for rate in run.algorithm.log_rates.values():
            rate.fill_(-20.0)  # ~2e-9: almost no adaptation
    distances = evaluate("weight-distance", num_tasks=2)["rows"]
    assert all(row["mean"] < 1e-6 for row in distances)
