"""Returns, the linear feature baseline and generalised advantage estimation.

The baseline is the one of the MAML RL setup (Finn et al. 2017, Section 5.3,
after Duan et al. 2016): a ridge regression of the discounted return on
``[o, o^2, t, t^2, t^3, 1]`` (observations clipped to [-10, 10], time
``t = step / 100``), fitted per task on that task's episodes. Advantages are
GAE (Schulman et al. 2016, Eq. 16) on the baseline's values, normalised per
task over the valid steps.

Shapes: ``rewards``/``mask`` are ``[T, E]`` (time steps, episodes), observations
``[T, E, obs]``; ``mask`` is 1 while the episode is running.
"""

from __future__ import annotations

import torch

GAMMA = 0.99  # pytorch-maml-rl configs: gamma 0.99
GAE_LAMBDA = 1.0  # pytorch-maml-rl configs: gae-lambda 1.0
BASELINE_REGULARISATION = 1e-5  # pytorch-maml-rl LinearFeatureBaseline reg_coeff (x10 on a failed solve)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """``G_t = r_t + gamma G_{t+1}`` within each episode: ``[T, E]``."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = (rewards[t] + gamma * running) * mask[t]
        returns[t] = running
    return returns


def baseline_features(observations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[T, E, 2*obs + 4]`` regression features, zero on padded steps."""
    steps, episodes = mask.shape
    clipped = observations.clamp(-10, 10)
    time = (torch.arange(steps, dtype=observations.dtype) / 100.0).view(steps, 1, 1).expand(steps, episodes, 1)
    ones = torch.ones_like(time)
    features = torch.cat([clipped, clipped**2, time, time**2, time**3, ones], dim=2)
    return features * mask.unsqueeze(-1)


def linear_baseline_values(observations, rewards, mask, gamma: float = GAMMA) -> torch.Tensor:
    """Fit the baseline to these episodes' returns and return its values ``[T, E]``."""
    features = baseline_features(observations.double(), mask.double()).flatten(0, 1)  # [T*E, F]
    targets = discounted_returns(rewards.double(), mask.double(), gamma).flatten()  # [T*E]
    gram, moment = features.T @ features, features.T @ targets
    regularisation = BASELINE_REGULARISATION
    for _ in range(5):
        eye = torch.eye(gram.shape[0], dtype=gram.dtype)
        weights = torch.linalg.lstsq(gram + regularisation * eye, moment.unsqueeze(1)).solution.squeeze(1)
        if torch.isfinite(weights).all():
            break
        regularisation *= 10
    values = (features @ weights).view_as(rewards)
    return values.to(rewards.dtype)


def gae(rewards, values, mask, gamma: float = GAMMA, lam: float = GAE_LAMBDA) -> torch.Tensor:
    """``A_t = sum_l (gamma lam)^l delta_{t+l}``, ``delta_t = r_t + gamma V_{t+1} - V_t``: ``[T, E]``."""
    values = values * mask
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = (deltas[t] + gamma * lam * running) * mask[t]
        advantages[t] = running
    return advantages


def normalise(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the valid steps (padded steps stay 0)."""
    count = mask.sum()
    mean = (advantages * mask).sum() / count
    std = (((advantages - mean) ** 2) * mask).sum().div(count).sqrt()
    return (advantages - mean) / (std + eps) * mask


def task_advantages(observations, rewards, mask) -> torch.Tensor:
    """The inner and outer losses' advantages for one task's episodes: ``[T, E]``, normalised."""
    values = linear_baseline_values(observations, rewards, mask)
    return normalise(gae(rewards, values, mask), mask)
