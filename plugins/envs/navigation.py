"""2D-Navigation (Finn et al. 2017, Section 5.3; the point task of pytorch-maml-rl).

    harness run --algo anil --env 2d-navigation     # 500 meta-iterations; docs/meta-rl.md: measured return beside the paper's

A point agent starts at the origin and moves to a goal drawn uniformly from
[-0.5, 0.5]^2. The observation is the position, the action a displacement
clipped to [-0.1, 0.1] per coordinate, the reward minus the Euclidean
distance to the goal after the move. An episode lasts 100 steps, or ends
earlier once the agent is within 0.01 of the goal on both coordinates.

The vector environment steps all ``num_envs`` points in one numpy operation
(gymnasium's native-vectorised form, a ``gymnasium.vector.VectorEnv``
subclass): one process is plenty for this arithmetic.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import harness

GOAL_LOW, GOAL_HIGH = -0.5, 0.5  # Finn et al. 2017, Section 5.3: goals in the unit square around the origin
ACTION_LIMIT = 0.1  # Finn et al. 2017, Section 5.3: actions clipped to [-0.1, 0.1]
EPISODE_STEPS = 100  # Finn et al. 2017, Section 5.3: horizon H = 100
GOAL_TOLERANCE = 0.01  # pytorch-maml-rl navigation.py: done within 0.01 of the goal on both axes


class Navigation2DVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` point agents; each env's goal comes from ``reset(options={"tasks": goals [num_envs, 2]})``."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = gym.spaces.Box(-ACTION_LIMIT, ACTION_LIMIT, (2,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.goals = np.zeros((num_envs, 2))
        self.positions = np.zeros((num_envs, 2))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "tasks" in options:
            self.goals = np.asarray(options["tasks"], dtype=np.float64).reshape(self.num_envs, 2)
        self.positions = np.zeros((self.num_envs, 2))
        return self.positions.astype(np.float32), {}

    def step(self, actions):
        actions = np.clip(np.asarray(actions, dtype=np.float64), -ACTION_LIMIT, ACTION_LIMIT)  # [num_envs, 2]
        self.positions = self.positions + actions
        offset = self.positions - self.goals
        rewards = -np.sqrt((offset**2).sum(-1))
        terminated = (np.abs(offset) < GOAL_TOLERANCE).all(-1)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self.positions.astype(np.float32), rewards, terminated, truncated, {}


class Navigation2D:
    name = "2d-navigation"
    description = "2D point navigation to a goal in [-0.5, 0.5]^2 (Finn et al. 2017), 100-step episodes"
    episode_steps = EPISODE_STEPS
    observation_dim, action_dim = 2, 2
    # pytorch-maml-rl configs/maml/2d-navigation.yaml: meta-batch 20 tasks (40 for HalfCheetah).
    paper_defaults = {"meta_batch_size": 20}
    paper_returns = {"maml-rl": (-20.3, 3.2), "anil-rl": (-20.1, 2.3)}  # Raghu et al. 2020, Table 2

    def sample_tasks(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(GOAL_LOW, GOAL_HIGH, size=(count, 2))  # [count, 2] goals

    def make_vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        return Navigation2DVectorEnv(num_envs)


@harness.hookimpl
def register_environments(registry):
    registry.add(Navigation2D())
