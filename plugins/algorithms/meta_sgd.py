"""Meta-SGD (Li, Zhou, Chen, Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning").

MAML's inner step with a learned step size per parameter element (Li et al. 2017):
theta' = theta - alpha o grad L^s(theta), with alpha the same shape as theta; the outer loop
learns theta and alpha together on the query loss of theta', second order.

The rates are parameters the algorithm owns: ``for_run(model, config)`` makes one tensor
per model parameter, which the trainer optimises with the model (Adam, the run's outer lr),
writes into every checkpoint (``"algorithm"``), restores on ``--resume`` and ``harness
eval`` loads, so every evaluator adapts with the learned rates. Li et al. initialise alpha
as part of their Algorithm 1 without a value the harness could quote; here every rate
starts at the run's ``--inner-lr`` (our choice), so the first outer step is exactly MAML's.

    harness run --algo meta-sgd --data omniglot-20w1s
"""

import torch
from torch import nn

import harness
from harness.engine.meta_learning import GradientMetaLearner


class MetaSGD(nn.Module, GradientMetaLearner):
    name = "meta-sgd"
    description = "Meta-SGD (Li et al. 2017): MAML with a learned step size per parameter element, second order"
    first_order = False

    def __init__(self, rates: dict[str, torch.Tensor] | None = None):
        super().__init__()
        # ParameterDict keys cannot contain ".": "body.0.0.weight" is stored as "body:0:0:weight".
        self.rates = nn.ParameterDict({name.replace(".", ":"): nn.Parameter(r) for name, r in (rates or {}).items()})

    def for_run(self, model: nn.Module, config) -> "MetaSGD":
        return MetaSGD({name: torch.full_like(p.detach(), config.inner_lr) for name, p in model.named_parameters()})

    def inner_lr(self, hp) -> dict[str, torch.Tensor]:
        if not self.rates:
            raise RuntimeError("Meta-SGD without rates: use for_run(model, config) to make a run's algorithm")
        return {name.replace(":", "."): rate for name, rate in self.rates.items()}


@harness.hookimpl
def register_algorithms(registry):
    registry.add(MetaSGD())
