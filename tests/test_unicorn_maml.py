"""UNICORN-MAML: one learned head vector duplicated per class at the start of every inner loop.

What it adapts (every layer, from a head whose rows are equal), that predictions no longer depend
on how a task's classes are numbered (MAML's do), its second-order meta-gradient with respect to
the vector and the body against finite differences, and the vector through the run lifecycle.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from finite_differences import assert_gradients_match
from tiny_model import tiny_setup
from torch.func import functional_call

from harness.data.episodes import Episodes
from harness.evaluation.activations import starting_point
from harness.plugin.manager import get_plugins
from harness.run.files import load_torch

HP = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=3)


def unicorn(model, seed=1):
    algorithm = get_plugins().algorithms.get("unicorn-maml").for_run(model, HP).double()
    torch.manual_seed(seed)
    with torch.no_grad():  # a vector far from zero, so the head is not trivially symmetric
        algorithm.head_vector.normal_()
        algorithm.head_bias.fill_(0.7)
    return algorithm


def relabelled(episodes: Episodes, permutation: torch.Tensor) -> Episodes:
    return Episodes(
        episodes.support_x,
        permutation[episodes.support_y],
        episodes.query_x,
        permutation[episodes.query_y],
        episodes.ways,
    )


def test_every_class_starts_from_the_same_head_vector():
    model, _ = tiny_setup()
    algorithm = unicorn(model)
    start = algorithm.initial_parameters(model, 4)  # any number of ways, not the model's 3
    assert start["head.weight"].shape == (4, 5) and start["head.bias"].shape == (4,)
    assert all(torch.equal(row, algorithm.head_vector) for row in start["head.weight"])
    before = starting_point(model, algorithm, 3)  # what the evaluators call "before adaptation"
    assert torch.equal(before["head.weight"][2], algorithm.head_vector.detach())
    assert torch.equal(before["body.0.weight"], model.body[0].weight.detach())


def test_predictions_do_not_depend_on_the_order_of_class_labels_as_maml_s_do():
    model, episodes = tiny_setup(tasks=2)
    with torch.no_grad():
        model.head.weight.normal_()  # MAML starts from rows tied to label positions
    permutation = torch.tensor([2, 0, 1])
    algorithm, maml = unicorn(model), get_plugins().algorithms.get("maml")
    for name, runs in (("unicorn", algorithm), ("maml", maml)):
        logits = runs.predict(model, episodes, HP)  # [tasks, ways*queries, ways]
        permuted = runs.predict(model, relabelled(episodes, permutation), HP)
        same = torch.allclose(permuted[..., permutation], logits, atol=1e-12)
        assert same == (name == "unicorn"), name


def body_movement(algorithm, model, episodes, steps):
    hp = SimpleNamespace(inner_lr=0.3)
    _, adapted = algorithm.adapt(model, episodes, steps, hp, return_adapted=True)  # {name: [tasks, *shape]}
    return max(
        (adapted[name] - p).abs().max().item() for name, p in model.named_parameters() if name.startswith("body")
    )


def test_a_single_inner_step_leaves_the_body_where_it_was_as_the_board_measured():
    # From equal head rows w, the support loss's gradient with respect to the features is
    # sum_c (p_c - y_c) w = 0 (probabilities and one-hot labels both sum to one): one inner step
    # adapts only the head, the converged board's UNICORN-MAML row (body L2 0.002 after 3 test steps).
    model, episodes = tiny_setup(tasks=2)
    algorithm, maml = unicorn(model), get_plugins().algorithms.get("maml")
    assert body_movement(algorithm, model, episodes, steps=1) < 1e-15
    assert body_movement(algorithm, model, episodes, steps=2) > 1e-4  # rows differ after the first step
    assert body_movement(maml, model, episodes, steps=1) > 1e-3


def meta_loss(model, episodes, params, vector, bias, steps, lr):
    """The definition as a plain per-task loop: head rows start at the vector, every layer adapts."""
    losses = []
    for t in range(episodes.num_tasks):
        fast = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        fast["head.weight"] = vector.expand(episodes.ways, -1).clone().requires_grad_()
        fast["head.bias"] = bias.expand(episodes.ways).clone().requires_grad_()
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (episodes.support_x[t],)), episodes.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
        losses.append(F.cross_entropy(functional_call(model, fast, (episodes.query_x[t],)), episodes.query_y[t]))
    return torch.stack(losses).mean()


def test_meta_gradient_of_the_vector_and_the_body_matches_finite_differences():
    model, episodes = tiny_setup(tasks=2)
    algorithm = unicorn(model)
    model.zero_grad()
    algorithm.train_step(model, episodes, HP)
    assert model.head.weight.grad is None  # the model's own head is never used
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    vector, bias = algorithm.head_vector.detach().clone(), algorithm.head_bias.detach().clone()
    checks = [(params["body.0.weight"], model.body[0].weight.grad), (params["body.2.bias"], model.body[2].bias.grad)]
    checks += [(vector, algorithm.head_vector.grad), (bias.view(1), algorithm.head_bias.grad.view(1))]
    checked = assert_gradients_match(
        checks, lambda: meta_loss(model, episodes, params, vector, bias, HP.inner_steps, HP.inner_lr).item()
    )
    assert checked >= 10


@pytest.mark.realdata
def test_the_vector_is_learned_checkpointed_resumed_and_used_by_every_evaluator(data_root, tmp_path):
    flags = ["--algo", "unicorn-maml", "--data", "omniglot-5w1s", "--meta-batch-size", "2", "--val-every", "5"]
    flags += ["--val-tasks", "4", "--test-tasks", "16", "--no-progress", "--no-download", "--data-root", str(data_root)]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli("run", *flags, "--iterations", "10", "--out", straight).returncode == 0
    assert run_cli("run", *flags, "--iterations", "5", "--out", resumed).returncode == 0
    result = run_cli("run", "--resume", resumed, "--iterations", "10", "--no-progress", "--data-root", data_root)
    assert result.returncode == 0, result.stderr
    final = [load_torch(run / "checkpoint.pt")["algorithm"] for run in (straight, resumed)]
    assert set(final[0]) == {"head_vector", "head_bias"} and final[0]["head_vector"].abs().sum() > 0  # learned
    for name, value in final[0].items():
        torch.testing.assert_close(value, final[1][name], rtol=0, atol=0)
    summary = json.loads((straight / "summary.json").read_text())
    freeze = run_cli("eval", straight, "--evaluator", "freeze", "-o", "layers=none", "--data-root", data_root)
    assert freeze.returncode == 0, freeze.stderr
    rows = json.loads((straight / "eval-freeze-layers=none.json").read_text())["rows"]
    assert rows[0]["mean"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)  # its own inner loop
    weights = run_cli("analyze", "weights", straight, "--tasks", "2", "--data-root", data_root)
    assert weights.returncode == 0, weights.stderr
