"""Max-pooling of contiguous (NCHW) CPU maps through PyTorch's channels-last kernel.

PyTorch's CPU ``max_pool2d_with_indices`` is an order of magnitude slower on NCHW maps than on
channels-last ones: on one query map of the paper's MiniImageNet MAML step ([75, 4*32, 84, 84],
tasks side by side) 0.231 s against 0.019 s (``results/benchmarks/NOTES.md``, "Max-pool"). MAML's
second-order inner loop keeps its maps NCHW (channels-last makes its double backward 1.1-2x
slower, measured), so only the pooling changes layout: the forward pools a channels-last copy
and returns NCHW values and indices (flat ``h * W + w`` per plane, the same in either layout),
and the backward is PyTorch's NCHW max-pool backward with those indices, itself differentiable
(a gather) for the second-order meta-gradient. Values, indices and both derivatives equal
``F.max_pool2d``'s (``tests/test_grouped_conv.py``).
"""

from __future__ import annotations

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable


class _MaxPool(Function):
    @staticmethod
    def forward(x, kernel, stride, padding, dilation, ceil_mode):
        values, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel, stride, padding, dilation, ceil_mode
        )
        return values.contiguous(), indices.contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, *ctx.conf = inputs
        ctx.save_for_backward(x, output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x, indices = ctx.saved_tensors
        return _MaxPoolBackward.apply(grad_values, x, indices, ctx.conf), None, None, None, None, None


class _MaxPoolBackward(Function):
    @staticmethod
    def forward(grad_values, x, indices, conf):
        return torch.ops.aten.max_pool2d_with_indices_backward(grad_values, x, *conf, indices)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_x):
        (indices,) = ctx.saved_tensors
        picked = grad_grad_x.flatten(2).gather(2, indices.flatten(2)).view_as(indices)
        return picked, None, None, None


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> torch.Tensor:
    """``F.max_pool2d`` for a 4-D NCHW CPU tensor, pooled in the fast channels-last kernel."""
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]
    stride = kernel_size if stride is None else stride
    values, _ = _MaxPool.apply(x, pair(kernel_size), pair(stride), pair(padding), pair(dilation), ceil_mode)
    return values
