"""A grouped 2-D convolution whose double backward is three convolution calls, not a loop over groups.

MAML's second-order meta-gradient differentiates the inner loop's weight gradients, i.e. it runs
the convolution's double backward. With the tasks side by side (``harness.engine.side_by_side``) every
convolution is grouped (``groups = tasks``), and PyTorch's double backward of a grouped
convolution slices input, weight and gradients group by group and runs one convolution per group
and term (``_convolution_double_backward`` in ``FunctionsManual.cpp``): 299 oneDNN calls and 1,163
copies in one MAML Omniglot 20w1s step of 16 tasks. Here the backward is itself a differentiable
function whose backward uses only whole-tensor grouped convolutions:

With ``y = conv(x, w)`` and ``gy`` the gradient of the loss at ``y``, the backward returns
``gx = conv_input_grad(gy, w)`` and ``gw = conv_weight_grad(gy, x)``; both are bilinear, so for
incoming ``ggx`` (at ``gx``) and ``ggw`` (at ``gw``):

- at ``gy``: ``conv(ggx, w) + conv(x, ggw)``;
- at ``w``: ``conv_weight_grad(gy, ggx)`` (from ``gx``);
- at ``x``: ``conv_input_grad(gy, ggw)`` (from ``gw``).

``conv_input_grad`` / ``conv_weight_grad`` are ``aten.convolution_backward``, one call for all
groups. Third derivatives are not provided (MAML needs two). Exactness against PyTorch's own
double backward is tested in float64 with ``gradcheck`` and ``gradgradcheck``
(``tests/test_grouped_conv.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable


def _backward(grad_out, x, weight, conf, need_input: bool, need_weight: bool):
    stride, padding, dilation, groups = conf
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [need_input, need_weight, False]
    )
    return grad_x, grad_w


class _GroupedConv(Function):
    @staticmethod
    def forward(x, weight, stride, padding, dilation, groups):
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, *conf = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = _GroupedConvBackward.apply(grad_out, x, weight, ctx.conf, need_x, need_w)
        return grad_x, grad_w, None, None, None, None


class _GroupedConvBackward(Function):
    @staticmethod
    def forward(grad_out, x, weight, conf, need_x, need_w):
        return _backward(grad_out, x, weight, conf, need_x, need_w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_out, x, weight, conf, _, _ = inputs
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conf = conf

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_x, grad_grad_w):
        grad_out, x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_gy, need_x, need_w = ctx.needs_input_grad[:3]
        at_gy = at_x = at_w = None
        if need_gy:
            terms = []
            if grad_grad_x is not None:
                terms.append(F.conv2d(grad_grad_x, weight, None, stride, padding, dilation, groups))
            if grad_grad_w is not None:
                terms.append(F.conv2d(x, grad_grad_w, None, stride, padding, dilation, groups))
            at_gy = sum(terms) if terms else None
        if need_x and grad_grad_w is not None:
            at_x = _backward(grad_out, x, grad_grad_w, ctx.conf, True, False)[0]
        if need_w and grad_grad_x is not None:
            at_w = _backward(grad_out, grad_grad_x, weight, ctx.conf, False, True)[1]
        return at_gy, at_x, at_w, None, None, None


def grouped_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """``F.conv2d`` with a batched double backward (``padding`` as integers; zero padding only)."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    out = _GroupedConv.apply(x, weight, pair(stride), pair(padding), pair(dilation), groups)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
