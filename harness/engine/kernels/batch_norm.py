"""Batch-statistics BatchNorm whose double backward is two fused passes, not PyTorch's composite.

MAML's second-order meta-gradient runs the double backward of every BatchNorm in the inner loop.
PyTorch's (``batchnorm_double_backward`` in ``FunctionsManual.cpp``) is a composite of some twenty
elementwise kernels over the full map; in a MAML Omniglot 20w1s step they are most of the 15.75 GB
that ``harness bench --floor`` counts as "other" (``results/benchmarks/cpu-floor.md``).

Notation, per channel over its ``N`` elements (batch and spatial positions): ``mu``, ``rstd =
1/sqrt(var + eps)``, ``h = (x - mu) * rstd``, ``M`` the mean, and the projection
``P(v) = v - M(v) - h * M(v * h)``. The backward, for ``gy`` the gradient at ``y = gamma * h + beta``::

    gx = gamma * q,   q = rstd * P(gy);   ggamma = sum(gy * h);   gbeta = sum(gy)

(``q``, ``ggamma``, ``gbeta``: one call of ``aten.native_batch_norm_backward`` without weight). The
backward of that, for incoming ``ggx``, ``gggamma``, ``ggbeta`` at ``gx``, ``ggamma``, ``gbeta``, with
``r = rstd * P(ggx)`` (one more ``native_batch_norm_backward`` call, which also gives ``M(ggx * h)``)::

    at gy:    gamma * r + gggamma * h + ggbeta
    at gamma: sum(ggx * q)
    at x:     c1 * q + c2 * r + c3 * (x - mu),   c1 = gggamma - gamma * rstd * M(ggx * h)
                                                 c2 = -gamma * rstd * M(gy * h)
                                                 c3 = -gamma * rstd**2 * M(ggx * q)

(``P`` is self-adjoint, and ``d h_j / d x_i = rstd * (delta_ij - 1/N - h_i h_j / N)``, which carries the
dependence of ``mu`` and ``rstd`` on ``x``.) Each output is an affine map of whole tensors with
per-channel coefficients: two or three ``addcmul`` passes. Third derivatives are not provided (MAML
needs two). Exact against PyTorch's composite in float64 (``tests/test_layer_kernels.py``: gradcheck,
gradgradcheck, odd sizes, a constant channel, affine and not).
"""

from __future__ import annotations

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

native_batch_norm_backward = torch.ops.aten.native_batch_norm_backward


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[C]`` -> ``[1, C, 1, ...]``, broadcastable against ``like`` (``[N, C, ...]``)."""
    return v.view(1, -1, *[1] * (like.dim() - 2))


def _normalised_gradient(grad: torch.Tensor, x, mean, invstd, eps: float):
    """``rstd * P(grad)``, ``sum(grad * h)``, ``sum(grad)`` per channel, in one kernel."""
    return native_batch_norm_backward(grad, x, None, None, None, mean, invstd, True, eps, [True, True, True])


class _BatchNorm(Function):
    @staticmethod
    def forward(x, weight, bias, eps):
        return torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.eps = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, output[1], output[2])
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_invstd):
        x, weight, mean, invstd = ctx.saved_tensors
        if grad_y is None:
            return None, None, None, None
        if torch.is_grad_enabled():  # create_graph: this backward is differentiated again (MAML)
            grad_x, grad_weight, grad_bias, _ = _BatchNormBackward.apply(grad_y, x, weight, mean, invstd, ctx.eps)
        else:
            grad_x, grad_weight, grad_bias = native_batch_norm_backward(
                grad_y, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True]
            )
        return (
            grad_x,
            None if weight is None else grad_weight,
            grad_bias if ctx.has_bias else None,
            None,
        )


class _BatchNormBackward(Function):
    """``(gy, x, gamma) -> (gx, ggamma, gbeta)``, and ``q`` (non-differentiable, kept for the double backward)."""

    @staticmethod
    def forward(grad_y, x, weight, mean, invstd, eps):
        q, grad_weight, grad_bias = _normalised_gradient(grad_y, x, mean, invstd, eps)
        if weight is None:
            return q, grad_weight, grad_bias, q.new_empty(0)
        return q * _per_channel(weight, q), grad_weight, grad_bias, q

    @staticmethod
    def setup_context(ctx, inputs, output):
        _grad_y, x, weight, mean, invstd, ctx.eps = inputs
        grad_x, grad_weight, _, q = output
        ctx.save_for_backward(x, weight, mean, invstd, grad_weight, grad_x if weight is None else q)
        ctx.mark_non_differentiable(q)
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_x, grad_grad_weight, grad_grad_bias, _grad_q):
        x, weight, mean, invstd, grad_weight, q = ctx.saved_tensors
        n = x.numel() // x.shape[1]
        gamma = torch.ones_like(invstd) if weight is None else weight
        c = lambda v: _per_channel(v, x)  # noqa: E731
        ggx = torch.zeros_like(x) if grad_grad_x is None else grad_grad_x
        gggamma = torch.zeros_like(invstd) if grad_grad_weight is None else grad_grad_weight
        r, ggx_h_sum, _ = _normalised_gradient(ggx, x, mean, invstd, ctx.eps)  # r = rstd * P(ggx)
        ggx_q_sum = (ggx * q).sum([d for d in range(x.dim()) if d != 1])  # [C]
        at_grad_y = None
        if ctx.needs_input_grad[0]:
            slope = invstd * gggamma  # gggamma * h = slope * (x - mu)
            offset = -slope * mean if grad_grad_bias is None else grad_grad_bias - slope * mean
            at_grad_y = torch.addcmul(c(offset), c(slope), x).addcmul_(c(gamma), r)
        at_x = None
        if ctx.needs_input_grad[1]:
            c1 = gggamma - gamma * invstd * ggx_h_sum / n
            c2 = -gamma * invstd * grad_weight / n
            c3 = -gamma * invstd**2 * ggx_q_sum / n
            at_x = torch.addcmul(c(-c3 * mean), c(c3), x).addcmul_(c(c1), q).addcmul_(c(c2), r)
        at_weight = ggx_q_sum if ctx.needs_input_grad[2] else None
        return at_grad_y, at_x, at_weight, None, None, None


def batch_norm(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` with a fused double backward."""
    return _BatchNorm.apply(x, weight, bias, eps)[0]
