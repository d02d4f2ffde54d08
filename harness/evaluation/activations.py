"""Capture per-layer activations before and after inner-loop adaptation.

Forward hooks on the backbone's ``body`` blocks (those with parameters) and
its ``head`` record outputs while ``torch.func.functional_call`` runs the
model with the meta-initialisation or with one task's adapted weights, so any
registered backbone works without changing its code.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call

from harness.data.episodes import Episodes
from harness.engine.network import body_and_head
from harness.errors import HarnessError
from harness.evaluation.fewshot import adapt_with


def require_body_head(model: nn.Module, needed_by: str) -> None:
    if body_and_head(model) is None:
        raise HarnessError(f"{needed_by} needs a model with a body/head split; {type(model).__name__} has none")


def analysed_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[("body.0", block), ..., ("head", head)]``: every parametrised body block and the head."""
    require_body_head(model, "this analysis")
    body = model.get_submodule("body")
    layers = [(f"body.{i}", block) for i, block in body.named_children() if any(True for _ in block.parameters())]
    return layers + [("head", model.get_submodule("head"))]


def layer_of(parameter_name: str) -> str:
    """``body.2.0.weight`` -> ``body.2``; ``head.bias`` -> ``head``."""
    parts = parameter_name.split(".")
    return "head" if parts[0] == "head" else ".".join(parts[:2])


def capture(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of every analysed layer for input ``x`` ``[batch, C, H, W]``."""
    store: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _in, out, name=name: store.__setitem__(name, out.detach()))
        for name, module in analysed_layers(model)
    ]
    try:
        with torch.no_grad():
            functional_call(model, params, (x,))
    finally:
        for handle in handles:
            handle.remove()
    return store


def adapted_parameters(model: nn.Module, algorithm, episodes: Episodes, steps: int, hp) -> dict[str, torch.Tensor]:
    """The algorithm's own inner loop on each support set: ``{name: [tasks, *shape]}`` for adapted names."""
    with torch.no_grad():
        _, adapted = adapt_with(algorithm, model, episodes, steps, hp, return_adapted=True)
    return adapted


def starting_point(model: nn.Module, algorithm, ways: int) -> dict[str, torch.Tensor]:
    """The parameters the inner loop starts from ("before adaptation"): the model's, with the
    algorithm's ``initial_parameters`` where it has them (UNICORN-MAML's duplicated head)."""
    with torch.no_grad():
        start = algorithm.initial_parameters(model, ways)
    return {name: start.get(name, p).detach() for name, p in model.named_parameters()}


def pre_post(model, algorithm, episodes: Episodes, steps: int, hp) -> Iterator[tuple[dict, dict, dict]]:
    """Per task: (activations before, activations after, that task's full parameter dict after).

    ``hp``: the run's config (the inner loop's step size, ``hp.inner_lr``, unless the algorithm has its own).
    """
    base = starting_point(model, algorithm, episodes.ways)
    adapted = adapted_parameters(model, algorithm, episodes, steps, hp)
    for t in range(episodes.num_tasks):
        task_params = {**base, **{name: value[t] for name, value in adapted.items()}}
        query = episodes.query_x[t]  # [ways*queries, C, H, W]
        yield capture(model, base, query), capture(model, task_params, query), task_params
