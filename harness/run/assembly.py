"""One assembly of a run's model, algorithm and inner-loop path, used by training, ``load_run``, the speed workloads and the
evaluators alike, so what an algorithm changes in the model (``prepare_model``: a context vector, wrapped
layers) and the parameters it keeps of its own (``for_run``) are the same wherever a run is rebuilt."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.engine.meta_learning import Engine, inner_loop_route
from harness.engine.network import body_and_head
from harness.engine.side_by_side import fast_path_problem
from harness.errors import HarnessError
from harness.plugin.algorithm import with_defaults


def build_model(backbone, algorithm, in_channels: int, image_size: int, head_outputs: int, bn_mode: str | None = None):
    """``backbone``'s network for images ``[C=in_channels, image_size, image_size]`` and a head of
    ``head_outputs``, as ``algorithm`` trains it (``prepare_model``). Draws from torch's generator: seed first."""
    options = {} if bn_mode is None else {"bn_mode": bn_mode}
    model = algorithm.prepare_model(backbone.build(in_channels, image_size, head_outputs, **options))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{algorithm.name}.prepare_model returned {type(model).__name__}, not an nn.Module")
    return model


def run_algorithm(algorithm, model: nn.Module, hp, device=None) -> Any:
    """The algorithm's instance for this run (``for_run``: Meta-SGD's step sizes for ``model``), its
    optional members resolved, on ``device`` when it owns parameters."""
    instance = with_defaults(algorithm.for_run(model, hp))
    if instance.owns_parameters and device is not None:
        instance.to(device)
    return instance


def initialise_head(model: torch.nn.Module, how: str) -> None:
    """``--head-init`` (``harness.run.config.HEAD_INITS``) on the network's linear ``head``; ``zero`` draws no random numbers."""
    split = body_and_head(model)
    head = None if split is None else split[1]
    if not isinstance(head, torch.nn.Linear):
        if how != "zero":
            raise HarnessError(f"--head-init {how} needs a network whose head is an nn.Linear")
        return
    with torch.no_grad():
        if how == "zero":
            head.weight.zero_()
            head.bias.zero_()
        elif how == "normal":
            head.weight.normal_(0.0, 1.0)
            head.bias.zero_()
        else:
            head.reset_parameters()


def fast_or_fallback(model: nn.Module, asked: str, sample: torch.Tensor) -> dict:
    """The inner loop a run records for ``--inner-loop auto`` or ``fast``: the fast paths if ``model`` has them
    and the side-by-side check passes on ``sample`` (two tasks ``[2, n, C, H, W]``). Without them ``auto``
    records the generic path, and ``fast`` what runs instead (``runs``)."""
    missing = fast_path_problem(model, sample)
    how = "auto: the model has fast paths" if asked == "auto" else "--inner-loop fast"
    if missing is None:
        return {"path": "fast", "how": how}
    if asked == "auto":
        return {"path": "generic", "how": f"auto: no fast path ({missing})"}
    # Head-only inner loops (ANIL) keep their own fast path; this is what an all-layer loop runs.
    runs = inner_loop_route(model, Engine(fast=True), sample)
    return {"path": "fast", "how": f"{how}; no side-by-side fast path ({missing})", "runs": runs}
