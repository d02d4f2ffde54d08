"""Meta-SGD: algorithm-owned parameters (learned step sizes) through the whole run lifecycle.

Its meta-gradient with respect to the rates and the weights against finite differences; the
rates are trained, checkpointed, resumed and used by every evaluator (freezing nothing at test
time gives the run's own test accuracy).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from tiny_model import tiny_setup
from torch.func import functional_call

from harness.plugin.manager import get_plugins
from harness.run.files import load_torch


def meta_loss(model, episodes, params, rates, steps):
    """Meta-SGD (Li et al. 2017) as a plain per-task loop: theta' = theta - alpha o grad, query loss of theta'."""
    losses = []
    for t in range(episodes.num_tasks):
        fast = {n: p.detach().clone().requires_grad_() for n, p in params.items()}  # values only: finite differences
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (episodes.support_x[t],)), episodes.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - rates[n] * g for (n, p), g in zip(fast.items(), grads)}
        losses.append(F.cross_entropy(functional_call(model, fast, (episodes.query_x[t],)), episodes.query_y[t]))
    return torch.stack(losses).mean()


def test_meta_gradient_of_weights_and_rates_matches_finite_differences():
    model, episodes = tiny_setup(tasks=2)
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3)
    algorithm = get_plugins().algorithms.get("meta-sgd").for_run(model, hp).double()
    with torch.no_grad():  # rates that differ per element, so a wrong broadcast cannot pass
        for rate in algorithm.rates.values():
            rate.uniform_(0.1, 0.5)
    algorithm.train_step(model, episodes, hp)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    rates = {n: r.detach().clone() for n, r in algorithm.inner_lr(hp).items()}
    analytic = {("w", n): p.grad for n, p in model.named_parameters()}
    analytic.update({("r", n): r.grad for n, r in algorithm.inner_lr(hp).items()})
    eps, checked = 1e-6, 0
    for kind, name in [
        ("w", "body.0.weight"),
        ("w", "head.bias"),
        ("r", "body.0.weight"),
        ("r", "body.2.bias"),
        ("r", "head.weight"),
    ]:
        flat = (params if kind == "w" else rates)[name].view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 3)):
            original = flat[index].item()
            flat[index] = original + eps
            plus = meta_loss(model, episodes, params, rates, hp.inner_steps).item()
            flat[index] = original - eps
            minus = meta_loss(model, episodes, params, rates, hp.inner_steps).item()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            assert analytic[(kind, name)].view(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)
            checked += 1
    assert checked >= 15


def test_with_every_rate_at_the_inner_lr_it_is_maml():
    model, episodes = tiny_setup(tasks=2)
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=3)
    plugins = get_plugins()
    meta_sgd = plugins.algorithms.get("meta-sgd").for_run(model, hp).double()
    torch.testing.assert_close(
        meta_sgd.predict(model, episodes, hp), plugins.algorithms.get("maml").predict(model, episodes, hp)
    )


@pytest.mark.realdata
def test_rates_are_learned_checkpointed_resumed_and_used_by_every_evaluator(data_root, tmp_path):
    flags = [
        "--algo",
        "meta-sgd",
        "--data",
        "omniglot-5w1s",
        "--meta-batch-size",
        "2",
        "--val-every",
        "5",
        "--log-every",
        "5",
        "--val-tasks",
        "4",
        "--test-tasks",
        "16",
        "--no-progress",
        "--no-download",
        "--data-root",
        str(data_root),
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli("run", *flags, "--iterations", "10", "--out", straight).returncode == 0
    assert run_cli("run", *flags, "--iterations", "5", "--out", resumed).returncode == 0
    result = run_cli("run", "--resume", resumed, "--iterations", "10", "--no-progress", "--data-root", data_root)
    assert result.returncode == 0, result.stderr
    final = [load_torch(run / "checkpoint.pt") for run in (straight, resumed)]
    for name, rate in final[0]["algorithm"].items():
        torch.testing.assert_close(rate, final[1]["algorithm"][name], rtol=0, atol=0)
    assert any(not torch.all(rate == 0.4) for rate in final[0]["algorithm"].values())  # learned, not left at --inner-lr
    summary = json.loads((straight / "summary.json").read_text())
    freeze = run_cli("eval", straight, "--evaluator", "freeze", "-o", "layers=none", "--data-root", data_root)
    assert freeze.returncode == 0, freeze.stderr
    rows = json.loads((straight / "eval-freeze-layers=none.json").read_text())["rows"]
    assert rows[0]["mean"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)  # the run's own inner loop
    similarity = run_cli("analyze", "weights", straight, "--tasks", "2", "--data-root", data_root)
    assert similarity.returncode == 0, similarity.stderr


@pytest.mark.realdata
@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
def test_freezing_nothing_at_test_time_gives_the_runs_own_test_accuracy(algo, data_root, tmp_path):
    out = tmp_path / algo
    result = run_cli(
        "run",
        "--algo",
        algo,
        "--data",
        "omniglot-5w1s",
        "--meta-batch-size",
        "2",
        "--iterations",
        "2",
        "--val-every",
        "2",
        "--val-tasks",
        "4",
        "--test-tasks",
        "8",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    freeze = run_cli("eval", out, "--evaluator", "freeze", "-o", "layers=none", "--data-root", data_root)
    assert freeze.returncode == 0, freeze.stderr
    own = json.loads((out / "summary.json").read_text())["test"]["accuracy"]
    assert json.loads((out / "eval-freeze-layers=none.json").read_text())["rows"][0]["mean"] == pytest.approx(
        own, abs=1e-12
    )
