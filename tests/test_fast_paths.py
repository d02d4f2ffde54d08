"""Backbone fast paths (``harness.engine.side_by_side``: the body once per meta-batch, tasks side by side) and
``--precision bf16`` against the generic vmap path and plain per-task autograd, on every bundled backbone.

``HARNESS_TEST_DEVICE=cuda`` runs the equivalence tests on a GPU (``scripts/gpu-check.sh``)."""

import os
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from test_meta_gradients import meta_loss_reference
from test_runs import SMALL, small_config

import harness.engine.meta_learning as ml
from harness.engine import side_by_side
from harness.engine.kernels.batch_norm import batch_norm
from harness.plugin.manager import get_plugins, load_plugins
from harness.run.assembly import run_algorithm
from harness.run.training import Trainer
from harness_plugins.backbones.resnet12 import ResNet12

#: Every bundled backbone with an input small enough for float64 second-order checks; a new backbone
#: joins here and gets every equivalence test of this file (and tests/test_side_by_side.py).
BACKBONES = [("conv4", 1, 28), ("conv4-pool", 3, 84), ("resnet12", 3, 16)]
DEVICE = torch.device(os.environ.get("HARNESS_TEST_DEVICE", "cpu"))


def build(backbone, channels, size, ways=5, bn_mode="batch", dtype=torch.float64):
    torch.manual_seed(0)
    if backbone == "resnet12":  # the same blocks at a fraction of the width: float64 second order in seconds
        model = ResNet12(channels, ways, bn_mode, widths=(6, 8, 10, 12)).to(DEVICE, dtype)
    else:
        model = get_plugins().backbones.get(backbone).build(channels, size, ways, bn_mode=bn_mode).to(DEVICE, dtype)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a zero head would hide errors in the features' gradient
    return model


def image_sets(channels, size, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    support = torch.rand(3, 5, channels, size, size, generator=generator, dtype=dtype)  # [tasks, ways*shots, C, H, W]
    query = torch.rand(3, 7, channels, size, size, generator=generator, dtype=dtype)  # another set size on purpose
    return support.to(DEVICE), query.to(DEVICE)


@pytest.mark.parametrize("bn_mode", ["batch", "none"])
@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_body_per_set_equals_the_body_run_per_task_and_set(backbone, channels, size, bn_mode, monkeypatch):
    """Each (task, set) must be its own BatchNorm batch, exactly as vmap over tasks gives."""
    model = build(backbone, channels, size, bn_mode=bn_mode)
    support, query = image_sets(channels, size)
    fast = ml.body_features(model, support, query)
    reference = ml.body_features(model, support, query, engine=ml.Engine(fast=False))
    for got, want in zip(fast, reference):
        assert got.shape == want.shape == (3, got.shape[1], model.feature_dim)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # Normalising all sets together would be a different function: the check above can tell.
    pooled = model.body(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))[:5]
    assert bn_mode == "none" or not torch.allclose(pooled, fast[0][0], atol=1e-6)


@pytest.mark.parametrize("algo", ["anil", "nil-train", "multitask"])
def test_meta_gradient_through_the_fast_path_equals_the_generic_path(algo, monkeypatch):
    model = build("conv4", 1, 28)
    support, query = image_sets(1, 28)
    episodes = SimpleNamespace(
        support_x=support,
        support_y=torch.arange(5, device=DEVICE).repeat(3, 1),
        query_x=query,
        query_y=torch.arange(7, device=DEVICE).remainder(5).repeat(3, 1),
        ways=5,
        num_tasks=3,
    )
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=2)
    algorithm = get_plugins().algorithms.get(algo)

    def gradients():
        model.zero_grad()
        algorithm.train_step(model, episodes, hp)
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    fast = gradients()
    hp.inner_loop = "generic"  # the run config's --inner-loop generic: vmap everywhere
    reference = gradients()
    assert set(fast) == set(reference) and any(name.startswith("body.0") for name in fast)
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_bf16_body_features_are_close_to_float32_and_come_back_as_float32(backbone, channels, size):
    model = build(backbone, channels, size, dtype=torch.float32)
    support, query = image_sets(channels, size, dtype=torch.float32)
    exact = ml.body_features(model, support, query)
    low = ml.body_features(model, support, query, engine=ml.Engine(precision="bf16"))
    for got, want in zip(low, exact):
        assert got.dtype == torch.float32
        error = (got - want).norm() / want.norm()
        assert 0 < error < 0.03, error  # bfloat16 has an 8-bit mantissa: about 0.4 % per rounding


def test_bf16_is_refused_for_algorithms_that_adapt_the_body(data_root, tmp_path):
    result = run_cli(
        "run",
        "--algo",
        "maml",
        "--data",
        "omniglot-5w1s",
        "--precision",
        "bf16",
        *SMALL,
        "--data-root",
        data_root,
        "--out",
        tmp_path / "r",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: --precision bf16 lowers the precision of body features computed once per meta-batch; "
        "'maml' does not compute them that way (it adapts the body or trains it directly); "
        "use it with anil, nil-train, multitask or multiclass"
    )
    assert not (tmp_path / "r").exists()
    result = run_cli(
        "run", "--algo", "anil", "--data", "omniglot-5w1s", "--precision", "fp16", *SMALL, "--data-root", data_root
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: unknown precision 'fp16'; valid: fp32, bf16"


def test_anil_learns_in_bf16(data_root, tmp_path):
    plugins = load_plugins()
    config = small_config(plugins, data_root, iterations=40, meta_batch_size=8, precision="bf16", test_tasks=60)
    summary = Trainer(config, plugins, tmp_path / "bf16", download=False, progress=False).train()
    assert summary["test"]["accuracy"] > 0.35, summary["test"]  # chance is 20 %
    assert summary["precision"] == "bf16"


def tiny_episodes(channels, size, dtype=torch.float64):
    support, query = image_sets(channels, size, dtype)
    return SimpleNamespace(
        support_x=support,
        support_y=torch.arange(5, device=DEVICE).repeat(3, 1),
        query_x=query,
        query_y=torch.arange(7, device=DEVICE).remainder(5).repeat(3, 1),
        ways=5,
        num_tasks=3,
    )


def reference_meta_gradient(model, episodes, steps, lr):
    """Plain autograd, one task at a time (tests/test_meta_gradients.py): no vmap, no grouped convolutions."""
    params = dict(model.named_parameters())
    loss = meta_loss_reference(model, episodes, params, steps, lr)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


@pytest.mark.parametrize("bn_mode", ["batch", "none"])
@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_maml_tasks_side_by_side_give_the_exact_second_order_meta_gradient(backbone, channels, size, bn_mode):
    model = build(backbone, channels, size, bn_mode=bn_mode)
    episodes = tiny_episodes(channels, size)
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=3)
    model.zero_grad()
    get_plugins().algorithms.get("maml").train_step(model, episodes, hp)
    reference = reference_meta_gradient(model, episodes, 2, 0.3)
    # Conv biases feeding batch-statistics BatchNorm have a zero gradient up to rounding: one scale for all.
    scale = max(g.abs().max() for g in reference.values())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-10 * scale, msg=name)


def test_vmap_second_order_through_batchnorm_is_not_used_on_the_default_path(monkeypatch):
    """A BatchNorm model the side-by-side rules cannot run (PReLU has parameters and no rule) goes task by
    task for second order (vmap is off by ~0.5 %)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2),
        torch.nn.BatchNorm2d(4, track_running_stats=False),
        torch.nn.PReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 13 * 13, 5),
    ).to(DEVICE, torch.float64)
    episodes = tiny_episodes(1, 28)
    model.zero_grad()
    logits = ml.adapt_and_predict(model, episodes, 2, 0.3, lambda name: True, first_order=False)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten()).backward()
    reference = reference_meta_gradient(model, episodes, 2, 0.3)
    scale = max(g.abs().max() for g in reference.values())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-10 * scale, msg=name)
    model.zero_grad()  # vmap everywhere: shown for the record, not asserted
    logits = ml.adapt_and_predict(
        model, episodes, 2, 0.3, lambda name: True, first_order=False, engine=ml.Engine(fast=False)
    )
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten()).backward()
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    want = torch.cat([g.flatten() for g in reference.values()])
    print(
        f"vmap second-order meta-gradient through BatchNorm: relative error {float((got - want).norm() / want.norm()):.1e}"
    )


@pytest.mark.parametrize("bn_mode", ["batch", "none"])
@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_fomaml_and_inference_side_by_side_equal_the_vmap_path(backbone, channels, size, bn_mode, monkeypatch):
    """First order (channels-last) must equal vmap + torch.func.grad, which is exact without second-order terms."""
    model = build(backbone, channels, size, bn_mode=bn_mode)
    episodes = tiny_episodes(channels, size)
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=3)
    algorithm = get_plugins().algorithms.get("fomaml")

    def gradients_and_predictions():
        model.zero_grad()
        algorithm.train_step(model, episodes, hp)
        with torch.no_grad():
            predictions = algorithm.predict(model, episodes, hp)
        return {name: p.grad.clone() for name, p in model.named_parameters()}, predictions

    fast, fast_predictions = gradients_and_predictions()
    hp.inner_loop = "generic"
    reference, reference_predictions = gradients_and_predictions()
    scale = max(g.abs().max() for g in reference.values())
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-9, atol=1e-10 * scale, msg=name)
    torch.testing.assert_close(fast_predictions, reference_predictions, rtol=1e-8, atol=1e-10)
    assert not fast_predictions.requires_grad  # no graph kept at test time


def test_partial_adaptation_and_adapted_parameters_match_the_generic_path(monkeypatch):
    """The freeze evaluator's case: layers 1-2 fixed; adapted parameters returned per task."""
    model = build("conv4", 1, 28)
    episodes = tiny_episodes(1, 28)
    adapts = lambda name: not name.startswith(("body.0.", "body.1."))
    logits, adapted = ml.adapt_and_predict(model, episodes, 3, 0.3, adapts, first_order=True, return_adapted=True)
    want_logits, want_adapted = ml.adapt_and_predict(
        model, episodes, 3, 0.3, adapts, first_order=True, return_adapted=True, engine=ml.Engine(fast=False)
    )
    torch.testing.assert_close(logits, want_logits, rtol=1e-8, atol=1e-10)
    assert set(adapted) == set(want_adapted) and "body.2.0.weight" in adapted and "body.0.0.weight" not in adapted
    for name in adapted:
        assert adapted[name].shape == (3, *dict(model.named_parameters())[name].shape)
        torch.testing.assert_close(adapted[name], want_adapted[name], rtol=1e-8, atol=1e-10, msg=name)


SECOND_ORDER = ["maml", "maml++", "boil", "unicorn-maml", "meta-sgd"]


@pytest.mark.parametrize("algo", SECOND_ORDER)
@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_fused_layer_kernels_give_the_composite_meta_gradient(algo, backbone, channels, size, monkeypatch):
    """``--layer-kernels fused`` (the default) against PyTorch's composite double backwards, every second-order
    algorithm on every bundled backbone, float64."""
    model = build(backbone, channels, size)
    episodes = tiny_episodes(channels, size)
    fused_calls = []
    monkeypatch.setattr(
        side_by_side,
        "batch_norm",
        lambda *args: fused_calls.append(1) or batch_norm(*args),  # noqa: B023
    )

    def meta_gradient(kernels):
        hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=2, outer_lr=1e-3, layer_kernels=kernels)
        algorithm = run_algorithm(get_plugins().algorithms.get(algo), model, hp, DEVICE)
        if algorithm.owns_parameters:
            algorithm.double()
        model.zero_grad()
        algorithm.train_step(model, episodes, hp)
        owned = {f"algorithm.{i}": p for i, p in enumerate(algorithm.owned_parameters())}
        everything = {**dict(model.named_parameters()), **owned}
        return {name: p.grad.clone() for name, p in everything.items() if p.grad is not None}

    fused = meta_gradient("fused")
    assert fused_calls, "the fused BatchNorm was not used"
    fused_calls.clear()
    composite = meta_gradient("composite")
    assert not fused_calls
    assert set(fused) == set(composite) and any(name.startswith("body.0") for name in fused)
    scale = max(g.abs().max() for g in composite.values())
    for name, want in composite.items():
        torch.testing.assert_close(fused[name], want, rtol=1e-10, atol=1e-10 * scale, msg=name)


def test_an_unknown_layer_kernel_choice_is_refused_before_any_work(tmp_path):
    result = run_cli(
        "run", "--algo", "maml", "--data", "omniglot-5w1s", "--layer-kernels", "fast", "--out", tmp_path / "r"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: harness run: argument --layer-kernels: invalid choice: 'fast' (choose from 'fused', "
        "'composite') (see harness run --help)"
    )
    assert not (tmp_path / "r").exists()
