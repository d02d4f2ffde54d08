"""Backbone fast paths (``Conv4.body_per_set``) and ``--precision bf16`` against the generic vmap path."""

from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from test_runs import SMALL, small_config

import harness.meta_learning as ml
from harness.plugin_manager import get_plugins, load_plugins
from harness.training import Trainer

BACKBONES = [("conv4", 1, 28), ("conv4-pool", 3, 84)]


def build(backbone, channels, size, ways=5, bn_mode="batch", dtype=torch.float64):
    torch.manual_seed(0)
    model = get_plugins().backbones.get(backbone).build(channels, size, ways, bn_mode=bn_mode).to(dtype)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a zero head would hide errors in the features' gradient
    return model


def image_sets(channels, size, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    support = torch.rand(3, 5, channels, size, size, generator=generator, dtype=dtype)  # [tasks, ways*shots, C, H, W]
    query = torch.rand(3, 7, channels, size, size, generator=generator, dtype=dtype)  # another set size on purpose
    return support, query


@pytest.mark.parametrize("bn_mode", ["batch", "none"])
@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_body_per_set_equals_the_body_run_per_task_and_set(backbone, channels, size, bn_mode, monkeypatch):
    """Each (task, set) must be its own BatchNorm batch, exactly as vmap over tasks gives."""
    model = build(backbone, channels, size, bn_mode=bn_mode)
    support, query = image_sets(channels, size)
    fast = ml.body_features(model, support, query)
    monkeypatch.setattr(ml, "FAST_PATHS", False)
    reference = ml.body_features(model, support, query)
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
    episodes = SimpleNamespace(support_x=support, support_y=torch.arange(5).repeat(3, 1), query_x=query,
                               query_y=torch.arange(7).remainder(5).repeat(3, 1), ways=5, num_tasks=3)
    hp = SimpleNamespace(inner_steps=2, inner_lr=0.3, test_inner_steps=2)
    algorithm = get_plugins().algorithms.get(algo)

    def gradients():
        model.zero_grad()
        algorithm.train_step(model, episodes, hp)
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    fast = gradients()
    monkeypatch.setattr(ml, "FAST_PATHS", False)
    reference = gradients()
    assert set(fast) == set(reference) and any(name.startswith("body.0") for name in fast)
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("backbone,channels,size", BACKBONES)
def test_bf16_body_features_are_close_to_float32_and_come_back_as_float32(backbone, channels, size):
    model = build(backbone, channels, size, dtype=torch.float32)
    support, query = image_sets(channels, size, dtype=torch.float32)
    exact = ml.body_features(model, support, query)
    with ml.body_precision("bf16"):
        low = ml.body_features(model, support, query)
    assert ml._body_dtype is None  # the context restores float32
    for got, want in zip(low, exact):
        assert got.dtype == torch.float32
        error = (got - want).norm() / want.norm()
        assert 0 < error < 0.03, error  # bfloat16 has an 8-bit mantissa: about 0.4 % per rounding


def test_bf16_is_refused_for_algorithms_that_adapt_the_body(data_root, tmp_path):
    result = run_cli("run", "--algo", "maml", "--data", "omniglot-5w1s", "--precision", "bf16", *SMALL,
                     "--data-root", data_root, "--out", tmp_path / "r")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: --precision bf16 lowers the precision of body features computed once per meta-batch; "
        "'maml' does not compute them that way (it adapts the body or trains it directly); "
        "use it with anil, nil-train, multitask or multiclass")
    assert not (tmp_path / "r").exists()
    result = run_cli("run", "--algo", "anil", "--data", "omniglot-5w1s", "--precision", "fp16", *SMALL,
                     "--data-root", data_root)
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: unknown precision 'fp16'; valid: fp32, bf16"


def test_anil_learns_in_bf16(data_root, tmp_path):
    plugins = load_plugins()
    config = small_config(plugins, data_root, iterations=40, meta_batch_size=8, precision="bf16", test_tasks=60)
    summary = Trainer(config, plugins, tmp_path / "bf16", download=False, progress=False).train()
    assert summary["test"]["accuracy"] > 0.35, summary["test"]  # chance is 20 %
    assert summary["precision"] == "bf16"
