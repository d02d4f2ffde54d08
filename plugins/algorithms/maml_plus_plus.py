"""MAML++ (Antoniou, Edwards, Storkey, ICLR 2019, "How to train your MAML"), Section 4.

MAML with five of the paper's changes, each an algorithm-owned parameter or schedule:

- **LSLR**, learned per-layer per-step inner learning rates: ``theta_{k+1} = theta_k - alpha_{l,k} grad``
  with one learned scalar per parameter tensor ``l`` and step ``k``, initialised at ``--inner-lr``;
- **BNWB**, per-step BatchNorm weights and biases: step ``k`` normalises with its own learned
  ``gamma_k, beta_k``, which the inner loop does not adapt (``enable_inner_loop_optimizable_bn_params:
  false`` in the reference configs); they start at the backbone's values;
- **MSL**, the multi-step loss: the meta-loss is ``sum_k v_k L^q(theta_{k+1})``, the query loss after
  every inner step, with ``v`` annealed from uniform towards the last step over the first
  ``MSL_EPOCHS`` epochs (:func:`step_loss_weights`);
- **DA**, derivative-order annealing: first order before ``SECOND_ORDER_FROM_EPOCH``, second after;
- **CA**, cosine annealing of the outer learning rate from ``--outer-lr`` to ``MIN_OUTER_LR`` over the
  run (``progress``, which the trainer calls before every step).

Not included: **BNRS** (per-step running statistics). The harness's BatchNorm normalises every
forward pass with that batch's statistics at training and test time, as the reference MAML code
does, so there are no running statistics to keep per step (``plugins/backbones/conv4.py``).

Defaults from the reference Omniglot configuration (AntreasAntoniou/HowToTrainYourMAMLPytorch,
``experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_20_0.json``): ``multi_step_loss_num_epochs``
10, ``total_iter_per_epoch`` 500, ``first_order_to_second_order_epoch`` -1 (second order from the
start), ``min_learning_rate`` 0.00001; epochs here are fractional (``step / 500``), so the
annealings move every iteration rather than once per 500. With ``--test-inner-steps`` above the
training steps, the extra steps reuse the last step's rate and BatchNorm parameters (the reference
evaluates with as many steps as it trains: ``number_of_evaluation_steps_per_iter`` 5).

    harness run --algo maml++ --data omniglot-20w1s
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import harness
from harness.engine.meta_learning import Engine, GradientMetaLearner, query_accuracy, sgd_step
from harness.engine.side_by_side import tasks_side_by_side

ITERATIONS_PER_EPOCH = 500  # total_iter_per_epoch
MSL_EPOCHS = 10  # multi_step_loss_num_epochs
SECOND_ORDER_FROM_EPOCH = 0  # first_order_to_second_order_epoch = -1: second order throughout
MIN_OUTER_LR = 1e-5  # min_learning_rate


def step_loss_weights(steps: int, epoch: float, msl_epochs: float = MSL_EPOCHS) -> torch.Tensor:
    """MSL's importance ``v`` of each step's query loss ``[steps]``: uniform at epoch 0; each non-final
    weight falls by ``1 / (steps * msl_epochs)`` per epoch to a floor of ``0.03 / steps``, the final one
    takes what they give up (the reference's ``get_per_step_loss_importance_vector``)."""
    decay, floor = 1.0 / steps / msl_epochs, 0.03 / steps
    weights = [max(1.0 / steps - epoch * decay, floor) for _ in range(steps - 1)]
    weights.append(min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor))
    return torch.tensor(weights)


def _norm_names(model: nn.Module) -> list[str]:
    return [
        f"{module_name}.{p}"
        for module_name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in ("weight", "bias")
    ]


class MAMLPlusPlus(nn.Module, GradientMetaLearner):
    name = "maml++"
    description = (
        "MAML++ (Antoniou et al. 2019): per-step learned inner rates and BatchNorm, multi-step loss, annealings"
    )
    first_order = False
    progress_spans_run = True  # CA's cosine runs over the run's iterations

    def __init__(
        self,
        model: nn.Module | None = None,
        steps: int = 0,
        inner_lr: float = 0.0,
        second_order_from_epoch: float = SECOND_ORDER_FROM_EPOCH,
    ):
        super().__init__()
        params = dict(model.named_parameters()) if model is not None else {}
        norms = _norm_names(model) if model is not None else []
        # ParameterDict keys cannot contain ".": "body.0.1.weight" is stored as "body:0:1:weight".
        self.rates = nn.ParameterDict(
            {n.replace(".", ":"): nn.Parameter(torch.full((steps,), float(inner_lr))) for n in params if n not in norms}
        )  # [steps] per tensor
        self.norms = nn.ParameterDict(
            {n.replace(".", ":"): nn.Parameter(params[n].detach().clone().expand(steps, -1).clone()) for n in norms}
        )  # [steps, C]
        self.second_order_from_epoch = second_order_from_epoch
        self.epoch = 0.0  # training progress in epochs of ITERATIONS_PER_EPOCH, set by progress()
        self.min_lr_factor = 0.0  # MIN_OUTER_LR / --outer-lr, set by for_run()

    def for_run(self, model: nn.Module, config) -> MAMLPlusPlus:
        run = MAMLPlusPlus(model, config.inner_steps, config.inner_lr)
        run.min_lr_factor = MIN_OUTER_LR / config.outer_lr
        return run.to(next(model.parameters()).device)

    def progress(self, step: int, iterations: int) -> float:
        """MSL's epoch and DA's order for this step; CA's outer lr factor, 1 at step 0 down to MIN_OUTER_LR."""
        self.epoch = step / ITERATIONS_PER_EPOCH
        self.first_order = self.epoch < self.second_order_from_epoch
        cosine = 0.5 * (1 + math.cos(math.pi * step / iterations))  # 1 -> 0 over the run
        return self.min_lr_factor + (1 - self.min_lr_factor) * cosine

    def initial_parameters(self, model, ways: int) -> dict[str, torch.Tensor]:
        return {name.replace(":", "."): value[0] for name, value in self.norms.items()}  # step 0's BatchNorm

    def _at_step(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        k = min(k, len(next(iter(self.rates.values()))) - 1)  # past the trained steps: the last step's
        return (
            {n.replace(":", "."): r[k] for n, r in self.rates.items()},
            {n.replace(":", "."): v[k] for n, v in self.norms.items()},
        )

    def _inner_loop(self, model, episodes, steps, hp, first_order, frozen=frozenset()):
        """Query logits after every step ``[steps][tasks, ways*queries, ways]`` and the adapted parameters."""
        if not self.rates:
            raise RuntimeError("MAML++ without its parameters: use for_run(model, config) to make a run's algorithm")
        tasks, engine = episodes.num_tasks, Engine.of(hp)
        norms = {n.replace(":", ".") for n in self.norms}
        adapted = [n for n, _ in model.named_parameters() if n not in norms and n not in frozen]
        with torch.enable_grad():
            fast = {n: p.unsqueeze(0).expand(tasks, *p.shape) for n, p in model.named_parameters() if n not in norms}
            fast = {
                n: p.detach().requires_grad_() if n in adapted and not p.requires_grad else p for n, p in fast.items()
            }
            per_step = []
            for k in range(steps):
                rates, bn = self._at_step(k)
                bn = {n: v.unsqueeze(0).expand(tasks, *v.shape) for n, v in bn.items()}
                logits = _forward(model, {**fast, **bn}, episodes.support_x, engine)  # [tasks, ways*shots, ways]
                loss = (
                    F.cross_entropy(logits.flatten(0, 1), episodes.support_y.flatten(), reduction="sum")
                    / logits.shape[1]
                )
                grads = torch.autograd.grad(loss, [fast[n] for n in adapted], create_graph=not first_order)
                fast.update(sgd_step({n: fast[n] for n in adapted}, dict(zip(adapted, grads)), rates))
                per_step.append(
                    _forward(model, {**fast, **bn}, episodes.query_x, engine)
                )  # [tasks, ways*queries, ways]
        return per_step, {**{n: fast[n] for n in adapted}, **bn}

    def adapt(self, model, episodes, steps, hp, first_order=None, frozen=frozenset(), return_adapted=False):
        first_order = self.first_order if first_order is None else first_order
        per_step, adapted = self._inner_loop(model, episodes, steps, hp, first_order, frozen)
        return (per_step[-1], adapted) if return_adapted else per_step[-1]

    def train_step(self, model, episodes, hp) -> dict:
        per_step, _ = self._inner_loop(model, episodes, hp.inner_steps, hp, self.first_order)
        weights = step_loss_weights(hp.inner_steps, self.epoch)
        losses = torch.stack([F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten()) for logits in per_step])
        loss = (weights.to(losses) * losses).sum()
        loss.backward()
        return {
            "loss": losses[-1].item(),
            "accuracy": query_accuracy(per_step[-1].detach(), episodes.query_y).mean().item(),
        }


def _forward(model, params: dict[str, torch.Tensor], images: torch.Tensor, engine: Engine) -> torch.Tensor:
    """Every task with its own parameters ``{name: [tasks, *shape]}``: ``[tasks, n, C, H, W]`` -> ``[tasks, n, ways]``."""
    side_by_side = tasks_side_by_side(model, images, engine.fused_layers) if engine.fast else None
    if side_by_side is not None:  # channels-last maps: faster with the fused kernels, slower with PyTorch's composites
        return side_by_side(params, images, engine.fused_layers)
    return torch.stack(
        [functional_call(model, {n: p[t] for n, p in params.items()}, (images[t],)) for t in range(images.shape[0])]
    )


@harness.hookimpl
def register_algorithms(registry):
    registry.add(MAMLPlusPlus())
