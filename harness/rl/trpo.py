"""Trust-region policy optimisation for the outer loop (Schulman et al. 2015, App. C; Finn et al. 2017, Section 5.3).

The step solves ``H x = g`` for the Fisher (KL Hessian) ``H`` by conjugate
gradient, scales it to the trust region ``0.5 x^T H x = max_kl`` and
backtracks until the surrogate loss improves and the mean KL stays within
``max_kl``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MAX_KL = 1e-2  # Finn et al. 2017, Section 5.3 / pytorch-maml-rl configs: max-kl 0.01
CG_ITERATIONS = 10  # pytorch-maml-rl configs: cg-iters 10
CG_DAMPING = 1e-5  # pytorch-maml-rl configs: cg-damping 1e-5
LINE_SEARCH_STEPS = 15  # pytorch-maml-rl configs: ls-max-steps 15
BACKTRACK_RATIO = 0.8  # pytorch-maml-rl configs: ls-backtrack-ratio 0.8


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iterations: int = CG_ITERATIONS,
    tolerance: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``."""
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        product = matvec(direction)
        step = residual_norm / (direction @ product)
        x = x + step * direction
        residual = residual - step * product
        new_norm = residual @ residual
        if new_norm < tolerance:
            break
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return x


def fisher_vector_product(kl: torch.Tensor, parameters: list[torch.Tensor], damping: float = CG_DAMPING):
    """``v -> (H + damping I) v`` with ``H`` the Hessian of ``kl`` (a scalar with a graph to ``parameters``)."""
    grads = torch.autograd.grad(kl, parameters, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def product(vector: torch.Tensor) -> torch.Tensor:
        hessian_vector = torch.autograd.grad(flat_grad @ vector, parameters, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hessian_vector]) + damping * vector

    return product


def trpo_step(
    parameters: list[torch.Tensor], surrogate: Callable[[], tuple[torch.Tensor, torch.Tensor]], max_kl: float = MAX_KL
) -> dict:
    """One TRPO update of ``parameters`` in place.

    ``surrogate()`` returns ``(loss, kl)`` for the current parameter values,
    both scalars with graphs to ``parameters`` (the KL is measured from the
    policy that collected the data, so it is 0 before the step). The line
    search calls it under ``torch.no_grad()``; a surrogate that needs inner
    gradients enables them itself.
    """
    loss, kl = surrogate()
    grads = torch.autograd.grad(loss, parameters, retain_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    product = fisher_vector_product(kl, parameters)
    direction = conjugate_gradient(product, flat_grad)
    curvature = 0.5 * direction @ product(direction)
    full_step = direction * torch.sqrt(max_kl / curvature.clamp(min=1e-12))
    old_values = [p.detach().clone() for p in parameters]
    old_loss = loss.item()
    with torch.no_grad():
        for attempt in range(LINE_SEARCH_STEPS):
            scale = BACKTRACK_RATIO**attempt
            offset = 0
            for parameter, old in zip(parameters, old_values):
                size = parameter.numel()
                parameter.copy_(old - scale * full_step[offset : offset + size].view_as(parameter))
                offset += size
            new_loss, new_kl = surrogate()
            if new_loss.item() < old_loss and new_kl.item() < max_kl:
                return {
                    "surrogate_before": old_loss,
                    "surrogate_after": new_loss.item(),
                    "kl": new_kl.item(),
                    "line_search_steps": attempt + 1,
                    "accepted": True,
                }
        for parameter, old in zip(parameters, old_values):
            parameter.copy_(old)
    return {
        "surrogate_before": old_loss,
        "surrogate_after": old_loss,
        "kl": 0.0,
        "line_search_steps": LINE_SEARCH_STEPS,
        "accepted": False,
    }
