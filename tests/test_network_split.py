"""The body / head split the analyses, ANIL and --head-init rely on (hook spec register_backbones)."""

import pytest
import torch
from torch import nn

from harness.engine.network import body_and_head
from harness.engine.side_by_side import body_once
from harness.errors import HarnessError
from harness.evaluation.activations import require_body_head
from harness.run.assembly import initialise_head


class Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Unsplit(nn.Module):
    """``body`` is a property, not a registered submodule: its parameters would not be named ``body.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    @property
    def body(self) -> nn.Module:
        return self.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_the_split_is_the_registered_body_and_head() -> None:
    model = Split()
    assert body_and_head(model) == (model.body, model.head)
    assert body_and_head(Unsplit()) is None
    assert body_and_head(nn.Sequential(nn.Linear(4, 2))) is None


def test_a_model_without_the_split_is_refused_in_one_line() -> None:
    with pytest.raises(HarnessError) as refused:
        require_body_head(Unsplit(), "this analysis")
    assert str(refused.value) == "this analysis needs a model with a body/head split; Unsplit has none"
    with pytest.raises(HarnessError) as refused:
        initialise_head(Unsplit(), "normal")
    assert str(refused.value) == "--head-init normal needs a network whose head is an nn.Linear"
    initialise_head(Unsplit(), "zero")  # the default: nothing to zero, nothing refused


def test_head_init_acts_on_the_registered_head_only() -> None:
    model = Split()
    body_before = model.body[1].weight.clone()
    initialise_head(model, "zero")
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    assert torch.equal(model.body[1].weight, body_before)


def test_the_body_runs_once_only_on_a_split_model() -> None:
    images = torch.randn(2, 3, 1, 2, 2)  # [tasks, n, C, H, W]
    assert body_once(Unsplit(), images) is None
    model = Split()
    run = body_once(model, images)
    assert run is not None
    features = run(images.flatten(0, 1), [3, 3])  # [6, 3]
    assert torch.allclose(features, model.body(images.flatten(0, 1)))
