"""``harness.testing``, the checks a plugin author runs, on the bundled plugins and on outside ones: a CAVIA-like
algorithm (``test_cavia_like.py``) and a GroupNorm backbone, which MAML must run on the fastest correct path
and record truthfully."""

from __future__ import annotations

import types

import pytest
import torch
from test_cavia_like import plugin as cavia_plugin
from test_inner_loop_choice import RefusesFoldedTasks
from torch import nn

import harness
from harness.errors import HarnessError
from harness.plugin.manager import load_plugins
from harness.testing import check_fast_path, check_registers, check_resume_exact


class GroupNormConv4:
    name = "groupnorm-conv4"
    description = "Conv4 with GroupNorm (4 groups) instead of BatchNorm: no side-by-side rule"

    def build(self, in_channels, image_size, ways, bn_mode="transductive"):
        blocks, channels = [], in_channels
        for _ in range(4):
            blocks.append(
                nn.Sequential(nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU())
            )
            channels = 16
        model = nn.Module()
        model.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # [batch, 16]
        model.head = nn.Linear(16, ways)
        model.forward = lambda x: model.head(model.body(x))
        return model


def groupnorm_plugin():
    module = types.ModuleType("groupnorm_backbone_plugin")
    module.register_backbones = harness.hookimpl(lambda registry: registry.add(GroupNormConv4()))
    return module


def test_every_bundled_algorithm_and_backbone_registers_as_it_is():
    plugins = load_plugins()
    for kind, registry in (("algorithm", plugins.algorithms), ("backbone", plugins.backbones)):
        for name, obj, _ in registry.items():
            assert check_registers(kind, obj) is obj, name


def test_an_algorithm_that_does_not_subclass_gets_every_default_and_one_without_predict_is_refused():
    class Bare:
        name, description = "bare", "train_step and predict only"

        def train_step(self, model, episodes, hp):
            return {"loss": 0.0, "accuracy": 0.0}

        def predict(self, model, episodes, hp):
            return None

    bare = check_registers("algorithm", Bare())
    spec = types.SimpleNamespace(ways=5)
    assert (bare.trains, bare.batch_kind, bare.adapts, bare.owns_parameters) == (True, "episodes", None, False)
    assert bare.head_outputs(spec, None) == 5 and bare.for_run(None, None) is bare and bare.progress(3, 10) == 1.0
    del Bare.predict
    with pytest.raises(HarnessError) as refused:
        check_registers("algorithm", Bare())
    assert str(refused.value) == (
        "plugin 'harness.testing' registered algorithm 'bare' without predict "
        "(harness/plugin/hookspecs.py, harness.plugin.protocols)"
    )


def test_the_fast_path_check_passes_conv4_and_names_why_not_for_the_others():
    plugins = load_plugins()
    torch.manual_seed(0)
    images = torch.randn(2, 5, 1, 28, 28)
    conv4 = plugins.backbones.get("conv4").build(1, 28, 5)
    assert check_fast_path(conv4, images) is None
    assert check_fast_path(GroupNormConv4().build(1, 28, 5), images) == (
        "body.0.1 (GroupNorm) has parameters and no side-by-side rule"
    )
    assert check_fast_path(RefusesFoldedTasks(conv4), images).startswith(
        "its forward raised ValueError under the side-by-side rules: expected 1 channel, got 2"
    )

    class WrongOwnPath(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(28 * 28, 5)

        def forward(self, x):
            return self.linear(x.flatten(1))

        def forward_tasks(self, params, images, channels_last):
            return torch.zeros(images.shape[0], images.shape[1], 5)

    assert check_fast_path(WrongOwnPath(), images).startswith("its forward_tasks differs from a forward per task")


@pytest.mark.realdata
@pytest.mark.parametrize("algo, extra", [("anil", ()), ("meta-sgd", ()), ("cavia-like", (cavia_plugin(),))])
def test_resumes_are_exact_for_bundled_and_outside_algorithms(data_root, tmp_path, algo, extra):
    summary = check_resume_exact(algo, "omniglot-5w1s", data_root, tmp_path, plugins=load_plugins(extra))
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0


@pytest.mark.realdata
@pytest.mark.parametrize(
    "asked, recorded",
    [
        (
            "auto",
            {
                "path": "generic",
                "how": "auto: no fast path (body.0.1 (GroupNorm) has parameters and no side-by-side rule)",
            },
        ),
        (
            "fast",
            {
                "path": "fast",
                "how": "--inner-loop fast; no side-by-side fast path (body.0.1 (GroupNorm) has parameters and no side-by-side rule)",
                "runs": "vmap (no side-by-side fast path for this model)",
            },
        ),
    ],
)
def test_maml_on_a_groupnorm_backbone_runs_vmap_and_records_it(data_root, tmp_path, asked, recorded):
    """vmap's second-order meta-gradient is exact through GroupNorm (``test_inner_loop_choice``), and faster
    than tasks one by one: the fastest correct path, whatever ``--inner-loop`` asks for."""
    plugins = load_plugins((groupnorm_plugin(),))
    summary = check_resume_exact(
        "maml", "omniglot-5w1s", data_root, tmp_path, plugins=plugins, backbone="groupnorm-conv4", inner_loop=asked
    )
    assert summary["inner_loop"] == recorded
