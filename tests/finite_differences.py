"""Central finite differences against an analytic gradient, a few entries of each tensor."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def assert_gradients_match(checks: list[tuple[torch.Tensor, torch.Tensor]], loss: Callable[[], float], eps=1e-6) -> int:
    """For each ``(values, analytic)``: perturb about three entries of ``values`` in place (the tensor
    ``loss()`` reads) by ``+-eps`` and compare ``(loss+ - loss-) / 2 eps`` with ``analytic``. Returns
    how many entries were checked."""
    checked = 0
    for values, analytic in checks:
        flat = values.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 3)):
            original = flat[index].item()
            flat[index] = original + eps
            plus = loss()
            flat[index] = original - eps
            minus = loss()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            assert analytic.reshape(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), index
            checked += 1
    return checked
