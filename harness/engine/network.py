"""The split every backbone's network exposes (hook spec ``register_backbones``): ``body`` and ``head``."""

from __future__ import annotations

from torch import nn


def body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(model.body, model.head)`` where both are registered submodules, else None.

    Registered children, not attribute lookups: the analyses address parameters as ``body.<i>.*`` and
    ``head.*``, which only registered submodules give.
    """
    children = dict(model.named_children())
    body, head = children.get("body"), children.get("head")
    return None if body is None or head is None else (body, head)
