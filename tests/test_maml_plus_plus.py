"""MAML++: per-step learned inner rates and BatchNorm, the multi-step loss and the annealings.

The multi-step loss weights against the reference rule; the second-order meta-gradient with respect
to weights, per-step rates and per-step BatchNorm parameters against finite differences (a plain
per-task loop written from the paper's definitions); one step at the initial rates is MAML; the
per-step parameters act at their own step only; the schedules; and the whole run lifecycle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import HANG_SECONDS, run_cli
from finite_differences import assert_gradients_match
from tiny_model import tiny_setup
from torch import nn
from torch.func import functional_call

from harness.plugin.manager import get_plugins
from harness.run.files import load_torch
from harness_plugins.algorithms.maml_plus_plus import MIN_OUTER_LR, MAMLPlusPlus, step_loss_weights

REPO = Path(__file__).resolve().parents[1]
HP = SimpleNamespace(inner_steps=3, inner_lr=0.3, test_inner_steps=3, outer_lr=0.001)


class TinyNormNet(nn.Module):
    """The tiny float64 network with a BatchNorm layer (batch statistics, as the backbones here)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Tanh())
        self.head = nn.Linear(5, 3)

    def forward(self, x):  # [batch, 6] -> [batch, 3]
        return self.head(self.body(x))


def setup(seed=0):
    _, episodes = tiny_setup(tasks=2, seed=seed)
    torch.manual_seed(seed)
    model = TinyNormNet().double()
    algorithm = get_plugins().algorithms.get("maml++").for_run(model, HP).double()
    with torch.no_grad():  # per-step values that differ, so a step using another step's cannot pass
        for rate in algorithm.rates.values():
            rate.uniform_(0.1, 0.5)
        for norm in algorithm.norms.values():
            norm.add_(0.3 * torch.randn_like(norm))
    return model, episodes, algorithm


def test_multi_step_loss_weights_follow_the_reference_rule():
    torch.testing.assert_close(step_loss_weights(5, 0.0), torch.full((5,), 0.2))
    halfway = step_loss_weights(5, 5.0)  # each non-final weight fell by 5 * 1/(5*10)
    torch.testing.assert_close(halfway, torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6]))
    late = step_loss_weights(5, 50.0)
    torch.testing.assert_close(late, torch.tensor([0.006, 0.006, 0.006, 0.006, 0.976]))
    assert all(step_loss_weights(5, e).sum().item() == pytest.approx(1.0) for e in (0, 2.5, 7, 10, 30))


def reference_meta_loss(model, episodes, params, rates, norms, steps, weights):
    """From the definitions: per task, step k uses rates[n][k] and BatchNorm norms[n][k]; the loss is
    sum_k v_k mean_t L^q_t(theta_{k+1}), the query evaluated with step k's BatchNorm."""
    per_step = torch.zeros(steps, dtype=torch.float64)
    for t in range(episodes.num_tasks):
        fast = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        for k in range(steps):
            bn = {n: v[k] for n, v in norms.items()}
            loss = F.cross_entropy(
                functional_call(model, {**fast, **bn}, (episodes.support_x[t],)), episodes.support_y[t]
            )
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - rates[n][k] * g for (n, p), g in zip(fast.items(), grads)}
            query = functional_call(model, {**fast, **bn}, (episodes.query_x[t],))
            per_step[k] = per_step[k] + F.cross_entropy(query, episodes.query_y[t]) / episodes.num_tasks
    return (weights * per_step).sum()


def test_meta_gradient_of_weights_rates_and_per_step_batchnorm_matches_finite_differences():
    model, episodes, algorithm = setup()
    algorithm.epoch = 4.0  # non-uniform step weights
    model.zero_grad()
    algorithm.train_step(model, episodes, HP)
    norm_names = {"body.1.weight", "body.1.bias"}
    assert all(model.get_parameter(n).grad is None for n in norm_names)  # the per-step copies are used instead
    params = {n: p.detach().clone() for n, p in model.named_parameters() if n not in norm_names}
    rates = {n.replace(":", "."): r.detach().clone() for n, r in algorithm.rates.items()}
    norms = {n.replace(":", "."): v.detach().clone() for n, v in algorithm.norms.items()}
    weights = step_loss_weights(HP.inner_steps, 4.0).double()
    checks = [(params["body.0.weight"], model.body[0].weight.grad), (params["head.bias"], model.head.bias.grad)]
    checks += [(rates["body.0.weight"], algorithm.rates["body:0:weight"].grad)]
    checks += [(rates["head.weight"], algorithm.rates["head:weight"].grad)]
    checks += [(norms["body.1.weight"], algorithm.norms["body:1:weight"].grad)]
    checks += [(norms["body.1.bias"], algorithm.norms["body:1:bias"].grad)]
    checked = assert_gradients_match(
        checks, lambda: reference_meta_loss(model, episodes, params, rates, norms, HP.inner_steps, weights).item()
    )
    assert checked >= 18


def test_one_step_at_the_initial_rates_is_maml():
    """Without normalisation layers (MAML adapts BatchNorm's weights; MAML++ learns them per step instead)."""
    model, episodes = tiny_setup(tasks=2)
    hp = SimpleNamespace(**{**vars(HP), "inner_steps": 1, "test_inner_steps": 1})
    fresh = get_plugins().algorithms.get("maml++").for_run(model, hp).double()
    torch.testing.assert_close(
        fresh.predict(model, episodes, hp), get_plugins().algorithms.get("maml").predict(model, episodes, hp)
    )


def test_a_later_step_s_rates_and_batchnorm_leave_the_earlier_steps_alone():
    model, episodes, algorithm = setup()
    before, _ = algorithm._inner_loop(model, episodes, 3, HP, first_order=True)
    with torch.no_grad():
        for rate in algorithm.rates.values():
            rate[2] += 0.2
        for norm in algorithm.norms.values():
            norm[2] += 0.5
    after, _ = algorithm._inner_loop(model, episodes, 3, HP, first_order=True)
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)
    assert not torch.allclose(after[2], before[2])


def test_outer_lr_follows_a_cosine_to_the_minimum_and_second_order_starts_at_its_epoch():
    model, _, _ = setup()
    algorithm = MAMLPlusPlus(model, 2, 0.3, second_order_from_epoch=1)
    algorithm.min_lr_factor = MIN_OUTER_LR / 0.001
    assert algorithm.progress(0, 1000) == pytest.approx(1.0) and algorithm.first_order
    assert algorithm.progress(500, 1000) == pytest.approx(0.5 + 0.5 * algorithm.min_lr_factor)
    assert not algorithm.first_order  # epoch 1: second order from here
    assert algorithm.progress(1000, 1000) == pytest.approx(algorithm.min_lr_factor)
    assert algorithm.epoch == 2.0


@pytest.mark.realdata
def test_trains_resumes_exactly_and_every_evaluator_uses_its_inner_loop(data_root, tmp_path):
    flags = ["--algo", "maml++", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--val-every", "5"]
    flags += ["--inner-steps", "2", "--test-inner-steps", "3", "--val-tasks", "4", "--test-tasks", "16"]
    flags += ["--no-progress", "--no-download", "--data-root", str(data_root)]
    flags += ["--iterations", "10"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli("run", *flags, "--out", straight).returncode == 0
    # Killed while writing its second checkpoint (step 10), so it resumes from step 5 of the same
    # 10-iteration schedule (the cosine's horizon is the run's --iterations).
    killed = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "inject_fault.py"),
            "kill-writing-checkpoint:2",
            "run",
            *flags,
            "--out",
            str(resumed),
        ],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        timeout=HANG_SECONDS,
    )
    assert killed.returncode == -signal.SIGKILL
    result = run_cli("run", "--resume", resumed, "--no-progress", "--data-root", data_root)
    assert result.returncode == 0, result.stderr
    final = [load_torch(run / "checkpoint.pt") for run in (straight, resumed)]
    owned = final[0]["algorithm"]
    assert owned["rates.head:weight"].shape == (2,) and owned["norms.body:0:1:weight"].shape == (2, 64)
    assert not torch.all(owned["rates.head:weight"] == 0.4)  # learned, not left at --inner-lr
    for name, value in owned.items():
        torch.testing.assert_close(value, final[1]["algorithm"][name], rtol=0, atol=0)
    lr = final[0]["optimizer"]["param_groups"][0]["lr"]
    assert lr < 0.001 * 0.99  # cosine-annealed by the last step
    summary = json.loads((straight / "summary.json").read_text())
    freeze = run_cli("eval", straight, "--evaluator", "freeze", "-o", "layers=none", "--data-root", data_root)
    assert freeze.returncode == 0, freeze.stderr
    rows = json.loads((straight / "eval-freeze-layers=none.json").read_text())["rows"]
    assert rows[0]["mean"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)
    similarity = run_cli("analyze", "similarity", straight, "--tasks", "2", "--data-root", data_root)
    assert similarity.returncode == 0, similarity.stderr
