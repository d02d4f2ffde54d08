"""A tiny body/head network in float64 for exact gradient checks."""

import torch
from torch import nn

from harness.data.episodes import Episodes


class TinyNet(nn.Module):
    def __init__(self, in_features=6, hidden=5, ways=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, ways)

    def forward(self, x):  # [batch, in_features] -> [batch, ways]
        return self.head(self.body(x))


def tiny_setup(tasks=3, ways=3, shots=2, queries=2, seed=0):
    torch.manual_seed(seed)
    model = TinyNet(ways=ways).double()
    episodes = Episodes(
        torch.randn(tasks, ways * shots, 6, dtype=torch.float64),
        torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1),
        torch.randn(tasks, ways * queries, 6, dtype=torch.float64),
        torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1),
        ways,
    )
    return model, episodes
