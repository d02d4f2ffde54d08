"""ReLU and LeakyReLU whose double backward is one kernel and sends nothing back to the activation.

The backward of ``y = leaky_relu(x, s)`` is ``gx = gy * (1 if x > 0 else s)``: linear in ``gy`` with a
mask that is piecewise constant in ``x``. Its derivative at ``gy`` is the same mask applied to the
incoming ``ggx``, and its derivative at ``x`` is zero almost everywhere. PyTorch's composite double
backward (``ThresholdBackwardBackward0``, ``LeakyReluBackwardBackward0``) returns that zero as a
full ``zeros_like`` map, which MAML's meta-gradient then adds into the activation's gradient and
carries back through the layers below: a wasted allocation, fill and addition per activation and
inner step. Here the derivative at ``x`` is ``None`` and nothing flows. Values and both
derivatives equal PyTorch's (``tests/test_layer_kernels.py``).
"""

from __future__ import annotations

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable


def _masked(grad: torch.Tensor, x: torch.Tensor, slope: float) -> torch.Tensor:
    """``grad`` where ``x > 0``, ``slope * grad`` elsewhere (``x``: the input, or ReLU's output)."""
    if slope == 0.0:
        return torch.ops.aten.threshold_backward(grad, x, 0)
    return torch.ops.aten.leaky_relu_backward(grad, x, slope, False)


class _Activation(Function):
    @staticmethod
    def forward(x, slope):
        return torch.relu(x) if slope == 0.0 else torch.nn.functional.leaky_relu(x, slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.slope = inputs
        ctx.save_for_backward(output if ctx.slope == 0.0 else x)  # ReLU's output has the input's sign pattern
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        if grad_y is None:  # only the (absent) derivative of the backward reached here: nothing to send on
            return None, None
        if torch.is_grad_enabled():  # create_graph: this backward is differentiated again (MAML)
            return _ActivationBackward.apply(grad_y, x, ctx.slope), None
        return _masked(grad_y, x, ctx.slope), None


class _ActivationBackward(Function):
    @staticmethod
    def forward(grad_y, x, slope):
        return _masked(grad_y, x, slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad_y, x, ctx.slope = inputs
        ctx.save_for_backward(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_x):
        (x,) = ctx.saved_tensors
        return _masked(grad_grad_x, x, ctx.slope), None, None


def relu(x: torch.Tensor) -> torch.Tensor:
    """``F.relu(x)``; its backward's derivative at ``x`` is not materialised."""
    return _Activation.apply(x, 0.0)


def leaky_relu(x: torch.Tensor, negative_slope: float = 0.01) -> torch.Tensor:
    """``F.leaky_relu(x, negative_slope)`` (slope > 0); its backward's derivative at ``x`` is not materialised."""
    return _Activation.apply(x, float(negative_slope))
