"""BOIL, Prototypical Networks and the head initialisation: what each adapts, and its gradients."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from test_meta_gradients import meta_loss_reference
from tiny_model import tiny_setup

from harness.plugin.manager import get_plugins
from harness.run.assembly import initialise_head
from harness.run.config import HEAD_INITS
from harness_plugins.algorithms.protonet import prototype_logits

HP = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=2)


def algorithm(name):
    return get_plugins().algorithms.get(name)


def test_boil_adapts_the_body_and_never_the_head():
    model, episodes = tiny_setup(tasks=2)
    _, adapted = algorithm("boil").adapt(model, episodes, 2, HP, return_adapted=True)
    assert set(adapted) == {name for name, _ in model.named_parameters() if name.startswith("body.")}
    initial = dict(model.named_parameters())
    assert all(not torch.allclose(value[0], initial[name]) for name, value in adapted.items())


def test_boil_with_a_zero_head_has_nothing_to_adapt():
    """The support loss's gradient reaches the body only through the head's weights."""
    model, episodes = tiny_setup(tasks=2)
    initialise_head(model, "zero")
    _, adapted = algorithm("boil").adapt(model, episodes, 2, HP, return_adapted=True)
    initial = dict(model.named_parameters())
    assert all(torch.equal(value[t], initial[name]) for name, value in adapted.items() for t in range(2))


def test_boil_meta_gradient_matches_finite_differences():
    model, episodes = tiny_setup(tasks=2)
    model.zero_grad()
    algorithm("boil").train_step(model, episodes, HP)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    eps, checked = 1e-6, 0
    for name in ["body.0.weight", "body.2.bias", "head.weight", "head.bias"]:
        flat = params[name].view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 3)):
            original = flat[index].item()
            flat[index] = original + eps
            plus = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr, ("body.",)).item()
            flat[index] = original - eps
            minus = meta_loss_reference(model, episodes, params, HP.inner_steps, HP.inner_lr, ("body.",)).item()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            assert grads[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, index)
            checked += 1
    assert checked >= 12


def test_prototypes_are_class_means_and_scores_negative_squared_distances():
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]]])  # classes 0, 0, 1, 1
    support_y = torch.tensor([[0, 0, 1, 1]])
    query = torch.tensor([[[1.0, 0.0], [0.0, 5.0], [1.0, 5.0]]])
    logits = prototype_logits(support, support_y, query, 2)  # prototypes (1, 0) and (0, 5)
    torch.testing.assert_close(logits, -torch.tensor([[[0.0, 26.0], [26.0, 0.0], [25.0, 1.0]]]))


def test_protonet_trains_the_body_only_and_predicts_with_its_prototypes():
    model, episodes = tiny_setup(tasks=3)
    protonet = algorithm("protonet")
    model.zero_grad()
    protonet.train_step(model, episodes, HP)
    assert all(p.grad is None for p in model.head.parameters())  # the head is never used
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters())
    features = model.body(episodes.support_x.flatten(0, 1)).view(3, -1, 5)
    queries = model.body(episodes.query_x.flatten(0, 1)).view(3, -1, 5)
    expected = prototype_logits(features, episodes.support_y, queries, episodes.ways)
    torch.testing.assert_close(protonet.predict(model, episodes, HP), expected)


@pytest.mark.parametrize("how", HEAD_INITS)
def test_head_initialisations(how):
    model, _ = tiny_setup()
    torch.manual_seed(0)
    initialise_head(model, how)
    weight, bias = model.head.weight, model.head.bias
    if how == "zero":
        assert not weight.any() and not bias.any()
    elif how == "normal":
        assert not bias.any() and 0.3 < weight.std() < 3 and weight.abs().max() > 0.5
    else:
        bound = 1 / weight.shape[1] ** 0.5  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
        assert weight.abs().max() <= bound and bias.any() and bias.abs().max() <= bound


@pytest.mark.realdata
@pytest.mark.parametrize("algo, extra", [("protonet", []), ("boil", ["--head-init", "default"])])
def test_a_short_run_learns(algo, extra, data_root, tmp_path):
    out = tmp_path / algo
    result = run_cli(
        "run",
        "--algo",
        algo,
        "--data",
        "omniglot-5w1s",
        "--meta-batch-size",
        "8",
        "--iterations",
        "60",
        "--val-every",
        "60",
        "--val-tasks",
        "20",
        "--test-tasks",
        "100",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        "--out",
        out,
        *extra,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.35, summary["test"]  # chance is 20 %
    assert json.loads((out / "config.json").read_text())["head_init"] == (extra[1] if extra else "zero")
    timed = run_cli("eval", out, "--evaluator", "step-time", "-o", "steps=2", "--data-root", data_root)
    assert timed.returncode == 0, timed.stderr
    result = json.loads((out / "eval-step-time-steps=2.json").read_text())
    assert (
        len(result["seconds"]) == 2
        and result["rows"][0]["mean"]
        == sorted(result["seconds"])[0] + (sorted(result["seconds"])[1] - sorted(result["seconds"])[0]) / 2
    )  # the median of the two timed steps
    assert result["meta_batch_size"] == 8 and 0 < result["rows"][0]["mean"] < 60
