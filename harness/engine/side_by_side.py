"""The fast paths for any backbone built from standard layers: tasks side by side, and the body once per meta-batch.

MAML-style inner loops give every task its own parameters; running the tasks one by one, or under
``vmap`` (whose BatchNorm rule copies around every normalisation), is slow. Here the network's own
``forward`` runs once with the tasks laid side by side in the channel dimension (``[n, tasks*C, H, W]``)
while each parametrised layer is temporarily given a per-task rule:

- ``nn.Conv2d``: one grouped convolution, ``groups = tasks * conv.groups``, weights ``[tasks*out, in, k, k]``;
- ``nn.BatchNorm1d/2d`` (batch statistics, ``track_running_stats=False``): plain batch norm over
  ``tasks*C`` channels, so each task's images are normalised by their own statistics;
- ``nn.Linear``: a batched matrix product per task on ``[n, tasks*F]`` features (task-major);
- ``nn.MaxPool2d`` (no rule needed for correctness): on a contiguous CPU map, pooled through the
  channels-last kernel (``harness.engine.kernels.max_pool``), an order of magnitude faster on large maps;
- ``nn.ReLU`` / ``nn.LeakyReLU`` (no rule needed for correctness): see below.

Convolutions use ``harness.engine.kernels.grouped_conv.grouped_conv2d``, whose double backward (MAML's second
order) is three whole-tensor convolutions instead of PyTorch's loop over groups. With ``fused_layers`` (the
default; a run's ``--layer-kernels``), BatchNorm and the activations go through ``harness.engine.kernels.batch_norm``
and ``.activation``, whose double backwards are a few fused passes instead of PyTorch's composites.

Every other module and every operation in a backbone's ``forward`` (activations, max-pool, average
pool, flatten, spatial means, residual additions) must act on each channel or each image separately,
which holds for the standard layers and keeps the task-major channel order intact. A backbone that
mixes channels otherwise (a channel concatenation, ``view(n, C, -1)`` with a fixed ``C``) would give
wrong results, so the first use on each model checks the rule against running each task on its own
(:func:`mismatch`) and falls back to the generic path, with a warning, when they differ. The same
check is the equivalence test any backbone can reuse (``tests/test_side_by_side.py`` runs it on every
registered backbone).

``body_per_set`` uses the same device for ANIL-style algorithms: the body runs once on all support and
query sets of a meta-batch with each BatchNorm call split per set.

A backbone may still define ``forward_tasks`` / ``body_per_set`` itself (``harness.plugin.hookspecs``; typed as
``harness.plugin.protocols.OwnForwardTasks`` / ``OwnBodyPerSet``); these are used instead.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from harness.engine.kernels import activation
from harness.engine.kernels.batch_norm import batch_norm
from harness.engine.kernels.grouped_conv import grouped_conv2d
from harness.engine.kernels.max_pool import max_pool2d
from harness.engine.network import body_and_head
from harness.plugin.protocols import OwnBodyPerSet, OwnForwardTasks

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
RULES = (nn.Conv2d, nn.Linear, *NORMS)
TOLERANCE = 1e-4  # relative, in float32: a wrong channel order is off by O(1)
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> why the rules do not run it, or None


def unsupported(model: nn.Module) -> str | None:
    """Why the rule cannot run ``model`` (a parametrised layer it has no rule for), or None."""
    for name, module in model.named_modules():
        if isinstance(module, NORMS) and module.track_running_stats:
            return f"{name} keeps running statistics (per-task updates would mix tasks)"
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            return f"{name} pads with {module.padding_mode!r}"
        own = any(True for _ in module.parameters(recurse=False))
        if own and not isinstance(module, RULES):
            return f"{name} ({type(module).__name__}) has parameters and no side-by-side rule"
    return None


def fast_path_unavailable(model: nn.Module) -> str | None:
    """Why ``model`` has no fast path (neither its own ``forward_tasks`` nor rules for every layer), or None."""
    if isinstance(model, OwnForwardTasks):
        return None
    return unsupported(model)


@contextmanager
def _forwards(rules: dict[nn.Module, Callable]) -> Iterator[None]:
    """Give each module a temporary ``forward`` (an instance attribute shadows the class's)."""
    try:
        for module, forward in rules.items():
            module.forward = forward
        yield
    finally:
        for module in rules:
            module.__dict__.pop("forward", None)


def _batch_norm(x: torch.Tensor, weight, bias, eps: float, fused: bool) -> torch.Tensor:
    if fused:
        return batch_norm(x, weight, bias, eps)
    return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)


def _activation_rules(model: nn.Module, fused: bool) -> dict[nn.Module, Callable]:
    """ReLU and LeakyReLU modules through ``harness.engine.kernels.activation`` (no zero map in the double backward)."""
    if not fused:
        return {}
    rules: dict[nn.Module, Callable] = {}
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            rules[module] = activation.relu
        elif isinstance(module, nn.LeakyReLU) and module.negative_slope > 0:
            rules[module] = lambda x, m=module: activation.leaky_relu(x, m.negative_slope)
    return rules


def _task_rules(
    model: nn.Module, params: dict[str, torch.Tensor], tasks: int, fused: bool
) -> dict[nn.Module, Callable]:
    rules: dict[nn.Module, Callable] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight, bias = params.get(f"{prefix}weight"), params.get(f"{prefix}bias")
        if isinstance(module, nn.Conv2d):  # weight [tasks, out, in/g, k, k] -> [tasks*out, in/g, k, k]

            def conv(x, m=module, w=weight, b=bias):
                b = None if b is None else b.flatten()
                return grouped_conv2d(x, w.flatten(0, 1), b, m.stride, m.padding, m.dilation, tasks * m.groups)

            rules[module] = conv
        elif isinstance(module, NORMS):

            def norm(x, m=module, w=weight, b=bias):
                w, b = (None, None) if w is None else (w.flatten(), b.flatten())
                return _batch_norm(x, w, b, m.eps, fused)

            rules[module] = norm
        elif isinstance(module, nn.Linear):  # [n, tasks*F] -> [n, tasks*out], weight [tasks, out, F]

            def linear(x, w=weight, b=bias):
                per_task = x.unflatten(-1, (tasks, w.shape[-1])).transpose(0, 1)  # [tasks, n, F]
                out = (
                    per_task @ w.transpose(1, 2)
                    if b is None
                    else torch.baddbmm(b.unsqueeze(1), per_task, w.transpose(1, 2))
                )
                return out.transpose(0, 1).flatten(1)  # [n, tasks*out]

            rules[module] = linear
        elif isinstance(module, nn.MaxPool2d) and not module.return_indices:

            def pool(x, m=module):
                if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
                    return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
                return max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)

            rules[module] = pool
    rules.update(_activation_rules(model, fused))
    return rules


def run_forward_tasks(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    images: torch.Tensor,
    channels_last: bool,
    fused_layers: bool = True,
) -> torch.Tensor:
    """Every task with its own parameters ``{name: [tasks, *shape]}`` on ``[tasks, n, C, ...]`` -> ``[tasks, n, out]``.

    ``fused_layers``: BatchNorm and activations through ``harness.engine.kernels`` (else PyTorch's composites)."""
    tasks, n = images.shape[:2]
    x = images.transpose(0, 1).reshape(n, tasks * images.shape[2], *images.shape[3:])  # [n, tasks*C, H, W]
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with _forwards(_task_rules(model, params, tasks, fused_layers)):
        out = model(x)  # [n, tasks*out]
    return out.view(n, tasks, -1).transpose(0, 1)


def run_body_per_set(body: nn.Module, images: torch.Tensor, set_sizes: list[int]) -> torch.Tensor:
    """``body`` on consecutive image sets ``[sum(set_sizes), C, H, W]``, each set its own BatchNorm batch.

    PyTorch's own BatchNorm: the body's graph here is first order (nothing differentiates its backward), where
    the fused kernels run the same aten kernels behind a little more Python."""
    rules: dict[nn.Module, Callable] = {
        m: (
            lambda x, m=m: torch.cat(
                [F.batch_norm(part, None, None, m.weight, m.bias, True, 0.0, m.eps) for part in x.split(set_sizes)]
            )
        )
        for m in body.modules()
        if isinstance(m, NORMS)
    }
    x = images.contiguous(memory_format=torch.channels_last) if images.dim() == 4 else images
    with _forwards(rules):
        return body(x)


def mismatch(model: nn.Module, images: torch.Tensor) -> float:
    """Largest relative difference between the side-by-side rules and each task run on its own.

    ``images``: ``[tasks, n, C, H, W]`` (two tasks or more); per-task parameters are the model's
    own, perturbed per task so a rule that mixes tasks cannot pass.
    """
    with torch.no_grad():
        tasks = images.shape[0]
        params = {
            name: p.detach().unsqueeze(0).expand(tasks, *p.shape)
            * (1 + 0.1 * torch.arange(tasks, dtype=p.dtype, device=p.device).view(-1, *[1] * p.dim()))
            for name, p in model.named_parameters()
        }
        got = run_forward_tasks(model, params, images, channels_last=False)
        want = torch.stack(
            [functional_call(model, {k: v[t] for k, v in params.items()}, (images[t],)) for t in range(tasks)]
        )
        differences = [(got - want).abs().max() / want.abs().max().clamp_min(1e-12)]
        split = body_and_head(model)
        if split is not None:
            body = split[0]
            got_body = run_body_per_set(body, images.flatten(0, 1), [images.shape[1]] * tasks)
            want_body = torch.cat([body(images[t]) for t in range(tasks)])
            differences.append((got_body - want_body).abs().max() / want_body.abs().max().clamp_min(1e-12))
    return float(max(differences))


def rules_problem(model: nn.Module, sample: torch.Tensor) -> str | None:
    """Why the rules do not run ``model`` correctly on ``sample`` (two tasks), or None. A model whose forward
    raises under the rules is a model without a fast path, never a failed run."""
    try:
        with torch.autocast(sample.device.type, enabled=False):
            error = mismatch(model, sample if sample.is_floating_point() else sample.float())
    except Exception as exc:  # a plugin's model may do anything in forward
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"its forward raised {type(exc).__name__} under the side-by-side rules: {first_line}"
    if error > TOLERANCE:
        return f"its forward mixes channels across tasks (relative error {error:.1e})"
    return None


def fast_path_problem(model: nn.Module, images: torch.Tensor) -> str | None:
    """Why ``model`` has no fast path that runs correctly: None for its own ``forward_tasks``, else the rules'
    :func:`side_by_side_problem` (``images``: ``[tasks, n, C, H, W]`` with two tasks or more)."""
    if isinstance(model, OwnForwardTasks):
        return None
    return side_by_side_problem(model, images)


def side_by_side_problem(model: nn.Module, images: torch.Tensor) -> str | None:
    """Why the rules cannot run ``model`` (structure, or a check on two tasks of ``images``), or None; checked
    once per model, and said once on stderr."""
    if model not in _checked:
        reason = unsupported(model)
        if reason is None:
            if images.shape[0] < 2:
                return None  # one task has nothing to mix with: check on a later call with more
            reason = rules_problem(model, images[:2, : min(images.shape[1], 4)])
        if reason is not None:
            print(
                f"harness: {type(model).__name__}: no side-by-side fast path ({reason}); its tasks run under vmap, "
                f"or one by one where vmap's second-order meta-gradient is wrong",
                file=sys.stderr,
            )
        _checked[model] = reason
    return _checked[model]


def _verified(model: nn.Module, images: torch.Tensor) -> bool:
    return side_by_side_problem(model, images) is None


def tasks_side_by_side(model: nn.Module, images: torch.Tensor, fused_layers: bool = True) -> Callable | None:
    """``forward_tasks(params, images, channels_last)`` for ``model``: its own, else the rules, else None."""
    if isinstance(model, OwnForwardTasks):
        return model.forward_tasks
    if not _verified(model, images):
        return None
    return lambda params, x, channels_last: run_forward_tasks(model, params, x, channels_last, fused_layers)


def body_once(model: nn.Module, images: torch.Tensor) -> Callable | None:
    """``body_per_set(images, set_sizes)`` for ``model``: its own, else the rules, else None.

    ``images``: one image set ``[tasks, n, C, H, W]`` of the call, for the first-use check.
    """
    if isinstance(model, OwnBodyPerSet):
        return model.body_per_set
    split = body_and_head(model)
    if split is None or not _verified(model, images):
        return None
    body = split[0]
    return lambda x, set_sizes: run_body_per_set(body, x, set_sizes)
