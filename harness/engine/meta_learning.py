"""The batched inner loop shared by MAML, FOMAML, ANIL and plugins built on them.

MAML (Finn et al. 2017, Eq. 1-2): for task i with support loss L_i^s and query
loss L_i^q, adapted parameters are theta_i' = theta - alpha * grad L_i^s(theta)
(repeated for several steps) and the meta-objective is mean_i L_i^q(theta_i').

Implementation notes (why, not what):

- Tasks are vectorised with ``torch.func.vmap``; the inner gradient is
  ``torch.func.grad``. The outer ``loss.backward()`` differentiates through
  both, so second-order terms are exact unless ``first_order`` detaches the
  inner gradients (FOMAML).
- Support and query go through the network in separate calls, so with
  batch-statistics BatchNorm each is normalised by its own statistics, as in
  the reference code.
- When no body parameter adapts (ANIL, Raghu et al. 2020 Section 4), the body
  runs once per meta-batch on support and query, and only the linear head is
  adapted on those features; the meta-gradient still reaches the body
  through the features, all support and query sets in one call, each its own
  BatchNorm batch (``harness.engine.side_by_side.body_once``). MAML's inner loop runs
  all tasks side by side without vmap (``tasks_side_by_side``: per-task
  convolutions as one grouped convolution). Both come from per-layer rules
  every backbone of standard layers gets (``harness.engine.side_by_side``). ``Engine(fast=False)``
  (a run's ``--inner-loop generic``) selects vmap everywhere: the
  implementation before the fast paths, which ``harness bench --paths`` times
  against them, and which a run with ``--inner-loop auto`` takes for a model
  the rules do not cover (``harness.run.training``).
- Second-order inner loops through normalisation layers do not use vmap on
  the default path: its meta-gradient through batch-statistics BatchNorm is
  off by ~0.5 % (``_adapt_task_by_task``, for backbones the side-by-side
  rules cannot run).
- ``Engine(precision="bf16")`` computes those body features under bfloat16
  autocast (opt-in, ``harness run --precision bf16``); the head's inner loop
  and the outer update stay in float32.

The engine is a value taken from the run's config (``Engine.of(hp)``), passed to
every call: no module state decides how a step runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from harness.data.episodes import Episodes
from harness.engine.side_by_side import body_once, tasks_side_by_side
from harness.plugin.algorithm import ImageAlgorithm

#: ``--precision`` values -> autocast dtype of the body features (None: float32 throughout).
BODY_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
_FAST_BY_DEFAULT = os.environ.get("HARNESS_FAST_PATHS", "1") != "0"  # read once: a process-wide default only


@dataclass(frozen=True)
class Engine:
    """How an inner loop runs: the backbone's fast paths or vmap everywhere, and the body's precision."""

    fast: bool = _FAST_BY_DEFAULT
    precision: str = "fp32"
    fused_layers: bool = True  # the fast paths' BatchNorm and activations: harness.engine.kernels, else PyTorch's

    @classmethod
    def of(cls, hp) -> Engine:
        """The engine a run's config asks for (``hp.inner_loop``, ``hp.precision``, ``hp.layer_kernels``); ``auto``
        not yet decided: fast."""
        path = getattr(hp, "inner_loop", "auto")
        return cls(
            fast=_FAST_BY_DEFAULT if path == "auto" else path == "fast",
            precision=getattr(hp, "precision", "fp32"),
            fused_layers=getattr(hp, "layer_kernels", "fused") == "fused",
        )

    @property
    def body_dtype(self) -> torch.dtype | None:
        return BODY_DTYPES[self.precision]


DEFAULT_ENGINE = Engine()  # the fast paths in float32 (HARNESS_FAST_PATHS=0: generic), for calls without a run config


def body_features(
    model: nn.Module, *image_sets: torch.Tensor, engine: Engine = DEFAULT_ENGINE
) -> tuple[torch.Tensor, ...]:
    """Body features of each task's image sets, every (task, set) its own BatchNorm batch.

    ``image_sets``: tensors ``[tasks, n_i, C, H, W]`` -> ``[tasks, n_i, features]`` each.
    """
    per_set = body_once(model, image_sets[0]) if engine.fast else None
    dtype = image_sets[0].dtype  # features come back in the input's dtype (autocast or not)
    body_dtype = engine.body_dtype
    autocast = torch.autocast(
        image_sets[0].device.type, dtype=body_dtype or torch.bfloat16, enabled=body_dtype is not None
    )
    if per_set is None:
        with autocast:
            return tuple(vmap(model.get_submodule("body"))(images).to(dtype) for images in image_sets)
    tasks = image_sets[0].shape[0]
    set_sizes = [images.shape[1] for images in image_sets for _ in range(tasks)]
    with autocast:
        features = per_set(torch.cat([images.flatten(0, 1) for images in image_sets]), set_sizes)  # [sum n_i*tasks, F]
    chunks = features.to(dtype).split([tasks * images.shape[1] for images in image_sets])
    return tuple(chunk.view(tasks, images.shape[1], -1) for chunk, images in zip(chunks, image_sets))


def step_size(lr, name: str):
    """The step size of parameter ``name``: ``theta' = theta - lr[name] * grad`` (elementwise).

    ``lr`` is one float for every parameter (MAML), or a tensor per parameter name, shaped like
    the parameter or broadcastable to it (Meta-SGD's learned rates, Li et al. 2017).
    """
    return lr[name] if isinstance(lr, dict) else lr


def sgd_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr, first_order: bool = False):
    """One inner-loop step, the only one in the harness: ``theta' = theta - step_size(lr, name) * grad`` for each
    name of ``params`` (Finn et al. 2017, Eq. 1); ``first_order`` detaches the gradients."""
    if first_order:
        return {name: p - step_size(lr, name) * grads[name].detach() for name, p in params.items()}
    return {name: p - step_size(lr, name) * grads[name] for name, p in params.items()}


def adapt_and_predict(
    model: nn.Module,
    episodes: Episodes,
    steps: int,
    lr: float | dict[str, torch.Tensor],
    adapts: Callable[[str], bool],
    first_order: bool,
    return_adapted: bool = False,
    engine: Engine = DEFAULT_ENGINE,
    start: dict[str, torch.Tensor] | None = None,
):
    """Adapt the parameters selected by ``adapts(name)`` on each task's support set.

    ``lr``: one step size, or ``{name: tensor}`` per parameter (see :func:`step_size`).
    ``start``: values that replace model parameters of the same name as the inner loop's
    starting point (UNICORN-MAML's duplicated head vector); gradients flow back through them.
    Returns query logits ``[tasks, ways*queries, ways]`` (and, with
    ``return_adapted``, the adapted parameters ``{name: [tasks, *shape]}``).
    """
    params = {**dict(model.named_parameters()), **(start or {})}
    adapted_names = [name for name in params if adapts(name)]
    fixed = {name: p for name, p in params.items() if name not in adapted_names}
    initial = {name: params[name] for name in adapted_names}

    if all(name.startswith("head.") for name in adapted_names):
        return _adapt_head_only(model, episodes, steps, lr, initial, first_order, return_adapted, engine)
    side_by_side = tasks_side_by_side(model, episodes.support_x, engine.fused_layers) if engine.fast else None
    if side_by_side is not None:
        channels_last = first_order or engine.fused_layers
        return _adapt_tasks_side_by_side(
            side_by_side, episodes, steps, lr, params, adapted_names, first_order, return_adapted, channels_last
        )
    if engine.fast and not first_order and _normalises(model):
        return _adapt_task_by_task(model, episodes, steps, lr, params, adapted_names, return_adapted)

    def support_loss(fast, x, y):
        logits = functional_call(model, {**fixed, **fast}, (x,))  # [ways*shots, ways]
        return F.cross_entropy(logits, y)

    def one_task(start, support_x, support_y, query_x):
        fast = start
        for _ in range(steps):
            fast = sgd_step(fast, grad(support_loss)(fast, support_x, support_y), lr, first_order)
        return functional_call(model, {**fixed, **fast}, (query_x,)), fast

    logits, fast = vmap(one_task, in_dims=(None, 0, 0, 0))(
        initial, episodes.support_x, episodes.support_y, episodes.query_x
    )
    return (logits, fast) if return_adapted else logits


def _adapt_tasks_side_by_side(
    forward_tasks, episodes, steps, lr, params, adapted_names, first_order, return_adapted, channels_last
):
    """The same inner loop without vmap: ``forward_tasks(params, images, channels_last)`` (``harness.engine.side_by_side``).

    ``channels_last``: the maps' layout. Faster for first-order graphs; for second-order ones only with the fused
    BatchNorm double backward, PyTorch's composite being 1.1-2x slower on channels-last maps
    (``results/benchmarks/NOTES.md``).

    Every parameter is expanded to one copy per task (``[tasks, *shape]``, a view);
    since tasks do not interact, one ``autograd.grad`` of the summed support losses
    gives each task's gradient with respect to its own copy.
    """
    tasks = episodes.support_x.shape[0]
    with torch.enable_grad():  # the inner loop needs gradients even when predicting under no_grad
        fast = {
            name: p.unsqueeze(0).expand(tasks, *p.shape)  # views, [tasks, *shape]
            for name, p in _differentiable(params, adapted_names).items()
        }
        for _ in range(steps):
            logits = forward_tasks(fast, episodes.support_x, channels_last)  # [tasks, ways*shots, ways]
            # Sum over tasks of each task's mean loss: task t's gradient is that of its own loss.
            loss = (
                F.cross_entropy(logits.flatten(0, 1), episodes.support_y.flatten(), reduction="sum") / logits.shape[1]
            )
            grads = torch.autograd.grad(loss, [fast[name] for name in adapted_names], create_graph=not first_order)
            fast.update(sgd_step({name: fast[name] for name in adapted_names}, dict(zip(adapted_names, grads)), lr))
    logits = forward_tasks(fast, episodes.query_x, channels_last)  # [tasks, ways*queries, ways]
    return (logits, {name: fast[name] for name in adapted_names}) if return_adapted else logits


def _differentiable(params: dict[str, torch.Tensor], adapted_names: list[str]) -> dict[str, torch.Tensor]:
    """Adapted parameters that do not require grad (frozen elsewhere, or under no_grad) as fresh leaves that do."""
    return {
        name: p.detach().requires_grad_() if name in adapted_names and not p.requires_grad else p
        for name, p in params.items()
    }


#: Layers through whose batching rule vmap's second-order meta-gradient is wrong (normalisation over the
#: batch or per instance; ``tests/test_fast_paths.py`` measures it in float64 against task by task, and
#: shows GroupNorm exact, so GroupNorm models keep vmap).
VMAP_SECOND_ORDER_WRONG = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


def _normalises(model: nn.Module) -> bool:
    return any(isinstance(module, VMAP_SECOND_ORDER_WRONG) for module in model.modules())


def inner_loop_route(model: nn.Module, engine: Engine, images: torch.Tensor) -> str:
    """How a second-order inner loop over every layer of ``model`` runs under ``engine`` (what a run records).

    ``images``: one image set ``[tasks, n, C, H, W]``, for the side-by-side check on first use."""
    if not engine.fast:
        return "vmap"
    if tasks_side_by_side(model, images) is not None:
        return "side by side"
    if _normalises(model):
        return "task by task (vmap's second-order meta-gradient is wrong through its normalisation layers)"
    return "vmap (no side-by-side fast path for this model)"


def _adapt_task_by_task(model, episodes, steps, lr, params, adapted_names, return_adapted):
    """Second-order inner loop with plain autograd, one task at a time.

    For models with a layer of ``VMAP_SECOND_ORDER_WRONG`` and no side-by-side path: under vmap, the
    second-order meta-gradient through batch statistics or instance norm is wrong, while this loop
    and ``forward_tasks`` agree to rounding (float64: ``tests/test_inner_loop_choice.py``);
    functorch's batching rule for normalisation backward is the suspect (pytorch/functorch#534).
    Correct first, then fast.
    """
    logits, adapted = [], {name: [] for name in adapted_names}
    params = _differentiable(params, adapted_names)
    for task in range(episodes.support_x.shape[0]):
        fast = dict(params)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (episodes.support_x[task],)), episodes.support_y[task])
            grads = torch.autograd.grad(loss, [fast[name] for name in adapted_names], create_graph=True)
            fast.update(sgd_step({name: fast[name] for name in adapted_names}, dict(zip(adapted_names, grads)), lr))
        logits.append(functional_call(model, fast, (episodes.query_x[task],)))  # [ways*queries, ways]
        for name in adapted_names:
            adapted[name].append(fast[name])
    logits = torch.stack(logits)  # [tasks, ways*queries, ways]
    return (logits, {name: torch.stack(v) for name, v in adapted.items()}) if return_adapted else logits


def _adapt_linear_head(head, support_features, support_y, query_features, steps, lr, first_order):
    """Inner loop of a linear head ``logits = f W^T + b`` under cross-entropy, in closed form.

    The gradient of the mean cross-entropy is ``dL/dlogits = (softmax - onehot) / n``,
    so each step is three batched products over all tasks; autograd differentiates
    through them exactly (the second-order meta-gradient of ANIL), and ``first_order``
    detaches the step. Equal to ``torch.func.grad`` of ``F.cross_entropy`` (tests).
    """
    tasks, n, _ = support_features.shape
    weight = head["weight"].expand(tasks, *head["weight"].shape)  # [tasks, ways, F]
    bias = head["bias"].expand(tasks, *head["bias"].shape)  # [tasks, ways]
    onehot = F.one_hot(support_y, weight.shape[1]).to(support_features.dtype)  # [tasks, n, ways]
    for _ in range(steps):
        logits = torch.baddbmm(bias.unsqueeze(1), support_features, weight.transpose(1, 2))  # [tasks, n, ways]
        dlogits = (logits.softmax(dim=-1) - onehot) / n
        dweight = dlogits.transpose(1, 2) @ support_features  # [tasks, ways, F]
        dbias = dlogits.sum(dim=1)  # [tasks, ways]
        stepped = sgd_step({"weight": weight, "bias": bias}, {"weight": dweight, "bias": dbias}, lr, first_order)
        weight, bias = stepped["weight"], stepped["bias"]
    logits = torch.baddbmm(bias.unsqueeze(1), query_features, weight.transpose(1, 2))  # [tasks, ways*queries, ways]
    return logits, {"weight": weight, "bias": bias}


def _adapt_head_only(model, episodes, steps, lr, initial, first_order, return_adapted, engine):
    head_initial = {name[len("head.") :]: p for name, p in initial.items()}
    if isinstance(lr, dict):  # the head's own names, as functional_call on model.head sees them
        lr = {name[len("head.") :]: value for name, value in lr.items() if name.startswith("head.")}
    fixed_head = {name: p for name, p in model.head.named_parameters() if name not in head_initial}
    # [tasks, ways*shots, F], [tasks, ways*queries, F]
    support_features, query_features = body_features(model, episodes.support_x, episodes.query_x, engine=engine)
    if engine.fast and isinstance(model.head, nn.Linear) and set(head_initial) == {"weight", "bias"}:
        logits, fast = _adapt_linear_head(
            head_initial, support_features, episodes.support_y, query_features, steps, lr, first_order
        )
        return (logits, {f"head.{name}": p for name, p in fast.items()}) if return_adapted else logits

    def support_loss(fast, features, y):
        return F.cross_entropy(functional_call(model.head, {**fixed_head, **fast}, (features,)), y)

    def one_task(start, features_s, support_y, features_q):
        fast = start
        for _ in range(steps):
            fast = sgd_step(fast, grad(support_loss)(fast, features_s, support_y), lr, first_order)
        return functional_call(model.head, {**fixed_head, **fast}, (features_q,)), fast

    logits, fast = vmap(one_task, in_dims=(None, 0, 0, 0))(
        head_initial, support_features, episodes.support_y, query_features
    )
    if return_adapted:
        return logits, {f"head.{name}": p for name, p in fast.items()}
    return logits


def query_accuracy(logits: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    """Per-task accuracy ``[tasks]`` from logits ``[tasks, n, ways]``."""
    return (logits.argmax(dim=-1) == query_y).float().mean(dim=1)


class GradientMetaLearner(ImageAlgorithm):
    """Base class for MAML-style algorithms; subclasses set the class attributes.

    ``adapts(name)`` says which parameters the inner loop updates (all for
    MAML, ``head.*`` for ANIL); ``first_order`` drops second-order terms;
    subclasses adapting only the head set ``uses_body_features``.
    """

    name = "gradient-meta-learner"

    def adapts(self, parameter_name: str) -> bool:
        return True

    def inner_lr(self, hp):
        """The inner loop's step size: ``hp.inner_lr``; an algorithm that learns it returns ``{name: tensor}``."""
        return hp.inner_lr

    def initial_parameters(self, model, ways: int) -> dict[str, torch.Tensor]:
        """Where the inner loop starts, by parameter name, where that is not the model's own parameter.

        Empty: the model's parameters (MAML). UNICORN-MAML returns a head built from one learned
        vector; the outer gradient reaches that vector through the returned tensors.
        """
        return {}

    def adapt(
        self,
        model,
        episodes,
        steps: int,
        hp,
        first_order: bool | None = None,
        frozen=frozenset(),
        return_adapted: bool = False,
    ):
        """This algorithm's inner loop, the one entry point of training, prediction and every evaluator.

        ``frozen``: parameter names kept at the meta-initialisation besides those ``adapts`` leaves out
        (the freezing evaluator); ``first_order`` defaults to the algorithm's own.
        """
        first_order = self.first_order if first_order is None else first_order
        adapts = self.adapts if not frozen else (lambda name: self.adapts(name) and name not in frozen)
        start = self.initial_parameters(model, episodes.ways)
        return adapt_and_predict(
            model, episodes, steps, self.inner_lr(hp), adapts, first_order, return_adapted, Engine.of(hp), start
        )

    def inner_loop(self, model, episodes, steps, lr, return_adapted=False):
        """The inner loop with an explicit step size (plugins such as Reptile call it directly)."""
        return adapt_and_predict(model, episodes, steps, lr, self.adapts, self.first_order, return_adapted)

    def train_step(self, model: nn.Module, episodes: Episodes, hp) -> dict:
        logits = self.adapt(model, episodes, hp.inner_steps, hp)  # [tasks, ways*queries, ways]
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())
        loss.backward()
        return {"loss": loss.item(), "accuracy": query_accuracy(logits.detach(), episodes.query_y).mean().item()}

    def predict(self, model: nn.Module, episodes: Episodes, hp) -> torch.Tensor:
        # Second-order terms are irrelevant without an outer backward pass.
        return self.adapt(model, episodes, hp.test_inner_steps, hp, first_order=True)
