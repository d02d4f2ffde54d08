"""Gaussian MLP policy of the MAML RL experiments (Finn et al. 2017, Section 5.3; Raghu et al. 2020, App. A).

Two tanh hidden layers of 100 units (Raghu et al. 2020: "two hidden layers of
size 100"), a linear mean ``head`` and a state-independent log standard
deviation. ANIL-RL adapts only ``head`` in the inner loop: the "last layer"
of the policy network.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, Normal

HIDDEN_SIZES = (100, 100)  # Raghu et al. 2020, App. A (RL): 2 hidden layers of 100 units
INIT_STD = 1.0  # pytorch-maml-rl NormalMLPPolicy init_std
MIN_STD = 1e-6  # pytorch-maml-rl NormalMLPPolicy min_std


class GaussianMLPPolicy(nn.Module):
    def __init__(self, observation_dim: int, action_dim: int, hidden_sizes=HIDDEN_SIZES):
        super().__init__()
        sizes = (observation_dim, *hidden_sizes)
        self.body = nn.Sequential(*[nn.Sequential(nn.Linear(a, b), nn.Tanh()) for a, b in zip(sizes, sizes[1:])])
        self.head = nn.Linear(sizes[-1], action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(INIT_STD)))
        for module in self.modules():
            if isinstance(module, nn.Linear):  # pytorch-maml-rl weight_init: Xavier-uniform weights, zero bias
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the action distribution, both ``[..., action_dim]``."""
        mean = self.head(self.body(observations))
        return mean, self.log_std.clamp(min=math.log(MIN_STD)).exp().expand_as(mean)


def distribution(mean: torch.Tensor, std: torch.Tensor) -> Independent:
    """Actions are independent Gaussians per dimension: log-probabilities sum over the action vector."""
    return Independent(Normal(mean, std), 1)
