"""The side-by-side path's own kernels equal PyTorch's, values and first and second derivatives, in float64.

``harness.engine.kernels.grouped_conv.grouped_conv2d`` replaces PyTorch's double backward of a grouped convolution
(a loop over groups) with three whole-tensor calls; ``harness.engine.kernels.max_pool.max_pool2d`` pools NCHW maps
through the channels-last kernel; ``batch_norm``, ``relu`` and ``leaky_relu`` replace PyTorch's composite double
backwards with a few fused passes. All feed MAML's second-order meta-gradient, so both derivatives
are checked numerically (gradcheck/gradgradcheck) and against PyTorch's own.
``HARNESS_TEST_DEVICE=cuda`` runs them on a GPU (``scripts/gpu-check.sh``).
"""

import os

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from harness.engine.kernels.activation import leaky_relu, relu
from harness.engine.kernels.batch_norm import batch_norm
from harness.engine.kernels.grouped_conv import grouped_conv2d
from harness.engine.kernels.max_pool import max_pool2d

DEVICE = torch.device(os.environ.get("HARNESS_TEST_DEVICE", "cpu"))


def second_order(fn, *inputs):
    """d/d(inputs) of a loss of the first derivatives, as MAML's meta-gradient is formed."""
    out = fn(*inputs)
    firsts = torch.autograd.grad((out**2).sum(), inputs, create_graph=True)
    return torch.autograd.grad(sum((g**3).sum() for g in firsts), inputs)


CONVS = [  # stride, padding, groups, image size
    (1, 1, 3, 7),
    (2, 1, 3, 8),
    (2, 1, 2, 7),  # odd size with stride 2: the input gradient's shape comes from the input
    (1, 0, 1, 5),
]


@pytest.mark.parametrize("stride, padding, groups, size", CONVS)
def test_grouped_conv_equals_pytorch_to_second_order(stride, padding, groups, size):
    torch.manual_seed(0)
    x = torch.randn(2, 2 * groups, size, size, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(3 * groups, 2, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ours = lambda x, w, b: grouped_conv2d(x, w, b, stride, padding, 1, groups)
    theirs = lambda x, w, b: F.conv2d(x, w, b, stride, padding, 1, groups)
    torch.testing.assert_close(ours(x, w, b), theirs(x, w, b))
    assert gradcheck(ours, (x, w, b)) and gradgradcheck(ours, (x, w, b))
    for got, want in zip(second_order(ours, x, w, b), second_order(theirs, x, w, b)):
        torch.testing.assert_close(got, want)


def test_grouped_conv_second_order_with_a_constant_input():
    """The first layer's input (the images) needs no gradient; the weight's second derivative still flows."""
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64, device=DEVICE)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ours = lambda w: grouped_conv2d(x, w, None, 2, 1, 1, 2)
    theirs = lambda w: F.conv2d(x, w, None, 2, 1, 1, 2)
    torch.testing.assert_close(second_order(ours, w), second_order(theirs, w))


@pytest.mark.parametrize(
    "shape, kernel, stride", [((2, 3, 8, 8), 2, None), ((2, 3, 7, 9), 2, None), ((1, 2, 6, 6), 3, 2)]
)
def test_max_pool_equals_pytorch_to_second_order(shape, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ours = lambda x: max_pool2d(x, kernel, stride)
    theirs = lambda x: F.max_pool2d(x, kernel, stride)
    out = ours(x)
    assert out.is_contiguous()  # the next layer gets the layout it was given
    torch.testing.assert_close(out, theirs(x))
    assert gradcheck(ours, (x,)) and gradgradcheck(ours, (x,))
    torch.testing.assert_close(second_order(ours, x), second_order(theirs, x))


BATCH_NORMS = [  # shape, affine, eps
    ((3, 4, 5, 3), True, 1e-5),  # odd spatial sizes
    ((3, 4, 5, 3), False, 1e-5),
    ((2, 3, 4, 4), True, 1e-1),  # a large eps: its place in rstd is checked
    ((5, 3), True, 1e-5),  # BatchNorm1d on features
    ((4, 2, 7), False, 1e-3),  # BatchNorm1d on sequences
]


@pytest.mark.parametrize("shape, affine, eps", BATCH_NORMS)
def test_batch_norm_equals_pytorch_to_second_order(shape, affine, eps):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, device=DEVICE)
    if x.dim() == 4:
        x[:, 1] = 0.7  # a constant channel: zero variance, rstd = 1/sqrt(eps)
    x.requires_grad_()
    channels = shape[1]
    affine_inputs = [torch.randn(channels, dtype=torch.float64, device=DEVICE, requires_grad=True) for _ in range(2)]
    inputs = (x, *affine_inputs) if affine else (x,)
    ours = lambda x, w=None, b=None: batch_norm(x, w, b, eps)
    theirs = lambda x, w=None, b=None: F.batch_norm(x, None, None, w, b, True, 0.0, eps)
    torch.testing.assert_close(ours(*inputs), theirs(*inputs))
    assert gradcheck(ours, inputs) and gradgradcheck(ours, inputs)
    for got, want in zip(second_order(ours, *inputs), second_order(theirs, *inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())


def test_batch_norm_second_order_with_a_zero_weight_and_channels_last_maps():
    """A zero scale (a zero-initialised last BatchNorm) must not be divided by; channels-last maps keep their layout."""
    torch.manual_seed(2)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, device=DEVICE).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.tensor([0.0, 1.5, -0.3, 0.0], dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ours = lambda x, w, b: batch_norm(x, w, b, 1e-5)
    theirs = lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)
    for got, want in zip(second_order(ours, x, w, b), second_order(theirs, x, w, b)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())
    assert ours(x, w, b).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_activations_equal_pytorch_to_second_order_and_send_nothing_back_to_their_input(slope):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ours = (lambda x: relu(x)) if slope == 0.0 else (lambda x: leaky_relu(x, slope))
    theirs = lambda x: F.leaky_relu(x, slope)
    torch.testing.assert_close(ours(x), theirs(x))
    assert gradcheck(ours, (x,)) and gradgradcheck(ours, (x,))
    torch.testing.assert_close(second_order(ours, x), second_order(theirs, x))
    (first,) = torch.autograd.grad(ours(x).sum(), x, create_graph=True)
    # The backward is piecewise linear in x: its derivative there is zero, and not a materialised zero map.
    assert torch.autograd.grad(first.sum(), x, allow_unused=True) == (None,)
