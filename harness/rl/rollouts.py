"""Sampling episodes for a meta-batch of tasks in one vector environment.

The environment holds ``tasks * episodes_per_task`` copies, task-major (the
first ``episodes_per_task`` run task 0, and so on), so one ``step`` advances
every trajectory of the meta-batch. Each task's policy may have its own
(adapted) parameters: the forward pass is vmapped over tasks with
``torch.func.functional_call``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from harness.rl.advantages import task_advantages


@dataclass
class TaskEpisodes:
    """Episodes of a meta-batch; ``mask`` is 1 while an episode runs."""

    observations: torch.Tensor  # [tasks, T, E, obs]
    actions: torch.Tensor  # [tasks, T, E, act]
    rewards: torch.Tensor  # [tasks, T, E]
    mask: torch.Tensor  # [tasks, T, E]
    advantages: torch.Tensor | None = None  # [tasks, T, E], GAE on the linear baseline, normalised per task

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    def task(self, index: int) -> TaskEpisodes:
        advantages = None if self.advantages is None else self.advantages[index]
        return TaskEpisodes(
            self.observations[index], self.actions[index], self.rewards[index], self.mask[index], advantages
        )

    def returns(self) -> torch.Tensor:
        """Undiscounted return per task, averaged over its episodes: ``[tasks]``."""
        return self.rewards.sum(1).mean(-1)

    def with_advantages(self) -> TaskEpisodes:
        self.advantages = torch.stack(
            [task_advantages(self.observations[i], self.rewards[i], self.mask[i]) for i in range(self.num_tasks)]
        )
        return self


def policy_forward(policy, params: dict | None, observations: torch.Tensor):
    """Mean and std for ``observations [tasks, ..., obs]``; ``params`` stacked per task or ``None`` (shared)."""
    if params is None:
        return policy(observations)
    return vmap(lambda p, o: functional_call(policy, p, (o,)))(params, observations)


@torch.no_grad()
def collect(
    env,
    policy,
    params: dict | None,
    tasks: np.ndarray,
    episodes_per_task: int,
    steps: int,
    generator: torch.Generator,
    seed: int,
) -> TaskEpisodes:
    """Run ``episodes_per_task`` episodes of ``steps`` steps for every task; actions sampled from the policy."""
    num_tasks = len(tasks)
    env_tasks = np.repeat(tasks, episodes_per_task, axis=0)
    observation, _ = env.reset(seed=seed, options={"tasks": env_tasks})
    alive = np.ones(num_tasks * episodes_per_task, dtype=bool)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(steps):
        obs = torch.as_tensor(observation, dtype=torch.float32).view(num_tasks, episodes_per_task, -1)
        mean, std = policy_forward(policy, params, obs)  # [tasks, E, act]
        action = mean + std * torch.randn(mean.shape, generator=generator)
        observation, reward, terminated, truncated, _ = env.step(
            action.reshape(num_tasks * episodes_per_task, -1).numpy()
        )
        mask = torch.as_tensor(alive, dtype=torch.float32).view(num_tasks, episodes_per_task)
        observations.append(obs)
        actions.append(action)
        rewards.append(torch.as_tensor(reward, dtype=torch.float32).view(num_tasks, episodes_per_task) * mask)
        masks.append(mask)
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    return TaskEpisodes(
        torch.stack(observations, 1), torch.stack(actions, 1), torch.stack(rewards, 1), torch.stack(masks, 1)
    )
