"""One assembly of a run's model and algorithm, used by training, ``load_run``, the speed workloads and the
evaluators alike, so what an algorithm changes in the model (``prepare_model``: a context vector, wrapped
layers) and the parameters it keeps of its own (``for_run``) are the same wherever a run is rebuilt."""

from __future__ import annotations

from typing import Any

from torch import nn

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
