"""MAML/FOMAML/ANIL meta-gradients against independent references (float64)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tiny_model import tiny_setup
from torch.func import functional_call

from harness.engine.meta_learning import adapt_and_predict
from harness.plugin.manager import get_plugins

HP = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=2)


def algorithm(name):
    return get_plugins().algorithms.get(name)


def meta_loss_reference(model, episodes, params, steps, lr, adapted_prefixes=("",)):
    """Plain per-task loop with torch.autograd.grad(create_graph=True): no vmap, no torch.func.grad."""
    losses = []
    for t in range(episodes.num_tasks):
        fast = {n: p if p.requires_grad else p.detach().clone().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            logits = functional_call(model, fast, (episodes.support_x[t],))
            loss = F.cross_entropy(logits, episodes.support_y[t])
            names = [n for n in fast if n.startswith(adapted_prefixes)]
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=True)
            fast.update({n: fast[n] - lr * g for n, g in zip(names, grads)})
        losses.append(F.cross_entropy(functional_call(model, fast, (episodes.query_x[t],)), episodes.query_y[t]))
    return torch.stack(losses).mean()


def harness_meta_gradient(name, model, episodes):
    model.zero_grad()
    algorithm(name).train_step(model, episodes, HP)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_maml_meta_gradient_matches_finite_differences():
    model, episodes = tiny_setup()
    grads = harness_meta_gradient("maml", model, episodes)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    eps = 1e-6
    checked = 0
    for name in ["body.0.weight", "body.2.bias", "head.weight", "head.bias"]:
        flat = params[name].view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 4)):
            original = flat[index].item()
            flat[index] = original + eps
            plus = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr).item()
            flat[index] = original - eps
            minus = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr).item()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            assert grads[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, index)
            checked += 1
    assert checked >= 12


def test_maml_matches_per_task_autograd_loop():
    """The vmapped torch.func path equals a plain Python loop over tasks."""
    model, episodes = tiny_setup(tasks=4)
    grads = harness_meta_gradient("maml", model, episodes)
    params = dict(model.named_parameters())
    loss = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr)
    reference = torch.autograd.grad(loss, list(params.values()))
    for (name, _), expected in zip(params.items(), reference):
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12)


def test_fomaml_differs_from_maml_exactly_by_second_order_terms():
    """One inner step: MAML = (I - a H_s(theta)) g_q(theta'), FOMAML = g_q(theta')."""
    hp = SimpleNamespace(inner_steps=1, inner_lr=0.3)
    model, episodes = tiny_setup(tasks=2)
    names = [n for n, _ in model.named_parameters()]

    def grads_of(name):
        model.zero_grad()
        algorithm(name).train_step(model, episodes, hp)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    maml, fomaml = grads_of("maml"), grads_of("fomaml")
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def unflatten(vector):
        out, offset = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = vector[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        return out

    expected_difference = torch.zeros_like(theta)
    for t in range(episodes.num_tasks):

        def support_loss(vector, t=t):
            return F.cross_entropy(
                functional_call(model, unflatten(vector), (episodes.support_x[t],)), episodes.support_y[t]
            )

        def query_loss(vector, t=t):
            return F.cross_entropy(
                functional_call(model, unflatten(vector), (episodes.query_x[t],)), episodes.query_y[t]
            )

        adapted = theta - hp.inner_lr * torch.func.grad(support_loss)(theta)
        query_grad = torch.func.grad(query_loss)(adapted)
        _, hvp = torch.autograd.functional.hvp(support_loss, theta, query_grad)
        expected_difference += -hp.inner_lr * hvp / episodes.num_tasks
    torch.testing.assert_close(maml - fomaml, expected_difference, rtol=1e-9, atol=1e-12)
    assert (maml - fomaml).abs().max() > 1e-4  # the second-order terms are not negligible here


def test_anil_inner_loop_leaves_body_untouched_and_matches_reference():
    model, episodes = tiny_setup()
    anil = algorithm("anil")
    body_before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("body.")}
    _, adapted = anil.inner_loop(model, episodes, HP.inner_steps, HP.inner_lr, return_adapted=True)
    assert sorted(adapted) == ["head.bias", "head.weight"]
    for name, value in model.named_parameters():
        if name.startswith("body."):
            assert torch.equal(value.detach(), body_before[name])
    assert not torch.allclose(adapted["head.weight"][0], model.head.weight.detach())

    grads = harness_meta_gradient("anil", model, episodes)
    params = dict(model.named_parameters())
    loss = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr, adapted_prefixes=("head.",))
    reference = torch.autograd.grad(loss, list(params.values()))
    for (name, _), expected in zip(params.items(), reference):
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12)
    assert grads["body.0.weight"].abs().max() > 0  # the body is meta-learned by the outer loop


def test_head_only_fast_path_equals_plain_loop():
    """ANIL's features-once vmapped path gives the logits of a plain per-task head fine-tuning loop."""
    model, episodes = tiny_setup()
    fast = adapt_and_predict(model, episodes, 3, 0.2, lambda n: n.startswith("head."), first_order=False)
    assert fast.shape == (3, 6, 3)
    with torch.no_grad():
        loop = []
        for t in range(episodes.num_tasks):
            features_s = model.body(episodes.support_x[t])
            features_q = model.body(episodes.query_x[t])
            w, b = model.head.weight.clone(), model.head.bias.clone()
            for _ in range(3):
                with torch.enable_grad():
                    w_, b_ = w.requires_grad_(), b.requires_grad_()
                    loss = F.cross_entropy(features_s @ w_.T + b_, episodes.support_y[t])
                    gw, gb = torch.autograd.grad(loss, [w_, b_])
                w, b = (w_ - 0.2 * gw).detach(), (b_ - 0.2 * gb).detach()
            loop.append(features_q @ w.T + b)
    torch.testing.assert_close(fast.detach(), torch.stack(loop), rtol=1e-10, atol=1e-12)


def test_predict_uses_test_steps_and_no_outer_graph():
    model, episodes = tiny_setup()
    with torch.no_grad():
        logits = algorithm("maml").predict(model, episodes, HP)
    assert logits.shape == (3, 6, 3) and not logits.requires_grad
