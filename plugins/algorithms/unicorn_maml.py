"""UNICORN-MAML (Ye & Chao, ICLR 2022, "How to Train Your MAML to Excel in Few-Shot Classification").

MAML's head is a matrix ``W [ways, F]`` whose rows are tied to arbitrary label positions, so a
meta-learned initialisation depends on the order in which a task's classes are numbered. UNICORN-MAML
meta-learns one vector ``w [F]`` (and one bias ``b``) and starts every inner loop from the head
``W = [w; w; ...; w]`` (``ways`` copies, ``b`` likewise): every class starts equal, whatever its label
(Ye & Chao 2022, Section 5). The inner loop then adapts every layer as MAML; the outer gradient with
respect to ``w`` is the sum of the gradients of its copies, which autograd gives through
``expand``. The model's own head is never used, and any number of ways can be asked of a trained
network. Ye & Chao also report that MAML needs more inner steps than usually used; the steps here
are the run's ``--inner-steps`` / ``--test-inner-steps``, so that finding can be measured with them.
They matter more here than for MAML: from equal rows the loss's gradient with respect to the
features, ``sum_c (p_c - y_c) w``, is zero, so the first inner step adapts only the head; with one
training step UNICORN-MAML trains as ANIL with a tied head, and only later steps move the body.

``w`` and ``b`` are parameters this algorithm owns (``for_run``): learned with the model, saved
in every checkpoint, restored on ``--resume``, loaded by ``harness eval``. They start at zero, as
the backbones' heads do here (``--head-init zero``; the zeroing trick of Kao et al., ICLR 2022).

    harness run --algo unicorn-maml --data omniglot-20w1s
"""

import torch
from torch import nn

import harness
from harness.engine.meta_learning import GradientMetaLearner


class UnicornMAML(nn.Module, GradientMetaLearner):
    name = "unicorn-maml"
    description = "UNICORN-MAML (Ye & Chao 2022): MAML whose head starts as ways copies of one learned vector"
    first_order = False

    def __init__(self, features: int = 0):
        super().__init__()
        self.head_vector = nn.Parameter(torch.zeros(features))  # [F], w
        self.head_bias = nn.Parameter(torch.zeros(()))  # [], b

    def for_run(self, model: nn.Module, config) -> "UnicornMAML":
        return UnicornMAML(model.head.weight.shape[1]).to(model.head.weight.device)

    def initial_parameters(self, model, ways: int) -> dict[str, torch.Tensor]:
        if self.head_vector.numel() != model.head.weight.shape[1]:
            raise RuntimeError(
                "UNICORN-MAML without its head vector: use for_run(model, config) to make a run's algorithm"
            )
        return {
            "head.weight": self.head_vector.expand(ways, -1),  # [ways, F], every class the same vector
            "head.bias": self.head_bias.expand(ways),  # [ways]
        }


@harness.hookimpl
def register_algorithms(registry):
    registry.add(UnicornMAML())
