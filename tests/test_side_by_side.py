"""The side-by-side rules (``harness.engine.side_by_side``) on every registered backbone, and what happens when a
backbone breaks them: detected at first use, reported once, and the generic path used instead."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness.engine.meta_learning as ml
from harness.engine import side_by_side
from harness.plugin.manager import get_plugins

#: Input geometry per backbone (channels, image size); a backbone not listed gets (3, 32).
GEOMETRY = {"conv4": (1, 28), "conv4-pool": (3, 84)}


@pytest.mark.parametrize("name", sorted(get_plugins().backbones.names()))
def test_every_registered_backbone_runs_side_by_side_as_task_by_task(name):
    channels, size = GEOMETRY.get(name, (3, 32))
    torch.manual_seed(0)
    model = get_plugins().backbones.get(name).build(channels, size, 5)
    nn.init.normal_(model.head.weight, std=0.1)
    assert side_by_side.unsupported(model) is None
    images = torch.rand(3, 4, channels, size, size)
    assert side_by_side.mismatch(model, images) < side_by_side.TOLERANCE


class ChannelMixing(nn.Module):
    """Standard layers, but a forward that reads channels by position: wrong with tasks side by side."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):  # [B, 1, 8, 8] -> [B, 3]
        features = self.body(x).view(x.shape[0], 4, -1)  # assumes 4 channels: mixes tasks side by side
        return self.head(features.flip(1).flatten(1))


def episodes(tasks=3):
    torch.manual_seed(1)
    return ml.Episodes(
        torch.rand(tasks, 6, 1, 8, 8),
        torch.arange(3).repeat(tasks, 2),
        torch.rand(tasks, 6, 1, 8, 8),
        torch.arange(3).repeat(tasks, 2),
        3,
    )


def test_a_backbone_that_mixes_channels_is_caught_and_runs_on_the_generic_path(capsys):
    torch.manual_seed(0)
    model = ChannelMixing()
    nn.init.normal_(model.head.weight, std=0.1)
    batch = episodes()
    assert side_by_side.mismatch(model, batch.support_x) > 1e-2
    logits = ml.adapt_and_predict(model, batch, 2, 0.3, lambda name: True, first_order=True)
    reference = ml.adapt_and_predict(
        model, batch, 2, 0.3, lambda name: True, first_order=True, engine=ml.Engine(fast=False)
    )
    torch.testing.assert_close(logits, reference)
    warning = capsys.readouterr().err
    assert warning.startswith(
        "harness: ChannelMixing: no side-by-side fast path (its forward mixes channels across tasks"
    )
    assert warning.rstrip().endswith(
        "its tasks run under vmap, or one by one where vmap's second-order meta-gradient is wrong"
    )
    ml.adapt_and_predict(model, batch, 2, 0.3, lambda name: True, first_order=True)
    assert capsys.readouterr().err == ""  # checked once per model


def test_a_parametrised_layer_without_a_rule_is_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    assert side_by_side.unsupported(model) == "1 (GroupNorm) has parameters and no side-by-side rule"
    running = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert side_by_side.unsupported(running) == "1 keeps running statistics (per-task updates would mix tasks)"
