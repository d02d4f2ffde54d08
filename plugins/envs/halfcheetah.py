"""HalfCheetah-Direction and HalfCheetah-Velocity (Finn et al. 2017, Section 5.3; pytorch-maml-rl).

    harness run --algo anil --env halfcheetah-dir   # docs/meta-rl.md: measured s/meta-iteration and returns at our budget
    harness run --algo maml --env halfcheetah-vel

The body is gymnasium's HalfCheetah (its ``half_cheetah.xml``, 5 physics
steps of 0.01 s per action, its reset noise and its 17-number observation,
the joint positions without the root's x and all velocities). The task
changes the reward, as in the MAML RL setup:

- direction d in {-1, +1}: ``d * forward_velocity - 0.05 * |a|^2``;
- goal velocity v in U[0, 2]: ``-|forward_velocity - v| - 0.05 * |a|^2``.

Episodes last 200 steps (pytorch-maml-rl registers both with
``max_episode_steps=200``). The vector environment advances all
``num_envs`` cheetahs with ``mujoco.rollout`` on a pool of threads (one per
CPU core), so one Python call steps the whole meta-batch.
"""

from __future__ import annotations

import os
from importlib import resources

import gymnasium as gym
import mujoco
import numpy as np
from mujoco import rollout

import harness

EPISODE_STEPS = 200  # pytorch-maml-rl envs/__init__.py: HalfCheetahDir/Vel max_episode_steps=200
FRAME_SKIP = 5  # gymnasium HalfCheetah-v5 (dt = 5 x 0.01 s)
CONTROL_COST = 0.5 * 1e-1  # pytorch-maml-rl half_cheetah.py (from rllab): 0.5 * 1e-1 * sum(a^2)
RESET_NOISE = 0.1  # gymnasium HalfCheetah-v5 reset_noise_scale
GOAL_VELOCITY_RANGE = (0.0, 2.0)  # Finn et al. 2017, Section 5.3


def half_cheetah_model() -> mujoco.MjModel:
    # The model file only: importing gymnasium.envs.mujoco would also need its rendering dependencies.
    asset = resources.files("gymnasium") / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    return mujoco.MjModel.from_xml_path(str(asset))


class HalfCheetahTaskVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` cheetahs; ``reset(options={"tasks": [num_envs]})`` sets each env's direction or goal velocity."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, num_envs: int, reward: str, threads: int | None = None):
        self.num_envs, self.reward = num_envs, reward
        self.model = half_cheetah_model()
        self.threads = threads or os.cpu_count() or 1
        self.pool = rollout.Rollout(nthread=self.threads)
        self.datas = [mujoco.MjData(self.model) for _ in range(self.threads)]
        self.nq, self.nv = self.model.nq, self.model.nv
        self.dt = self.model.opt.timestep * FRAME_SKIP
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.single_action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.nq - 1 + self.nv,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.tasks = np.ones(num_envs)
        self.state = np.zeros((num_envs, 1 + self.nq + self.nv))  # [time, qpos, qvel]: mjSTATE_FULLPHYSICS here
        assert mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS) == self.state.shape[1]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "tasks" in options:
            self.tasks = np.asarray(options["tasks"], dtype=np.float64).reshape(self.num_envs)
        qpos = self.model.qpos0 + self.np_random.uniform(-RESET_NOISE, RESET_NOISE, (self.num_envs, self.nq))
        qvel = RESET_NOISE * self.np_random.standard_normal((self.num_envs, self.nv))
        self.state = np.concatenate([np.zeros((self.num_envs, 1)), qpos, qvel], axis=1)
        return self.observation(), {}

    def observation(self) -> np.ndarray:
        return self.state[:, 2:].astype(np.float32)  # qpos[1:], qvel: [num_envs, 17]

    def step(self, actions):
        low, high = self.single_action_space.low, self.single_action_space.high
        actions = np.clip(np.asarray(actions, dtype=np.float64), low, high)  # [num_envs, 6]
        controls = np.repeat(actions[:, None, :], FRAME_SKIP, axis=1)  # [num_envs, FRAME_SKIP, 6]
        x_before = self.state[:, 1].copy()
        states, _ = self.pool.rollout(self.model, self.datas, self.state, controls, nstep=FRAME_SKIP)
        self.state = states[:, -1]
        velocity = (self.state[:, 1] - x_before) / self.dt
        control_cost = CONTROL_COST * (actions**2).sum(-1)
        if self.reward == "direction":
            rewards = self.tasks * velocity - control_cost
        else:
            rewards = -np.abs(velocity - self.tasks) - control_cost
        done = np.zeros(self.num_envs, dtype=bool)
        return self.observation(), rewards, done, done.copy(), {"forward_velocity": velocity}

    def close(self, **kwargs):
        self.pool.close()
        super().close(**kwargs)


class HalfCheetahTasks:
    episode_steps = EPISODE_STEPS
    observation_dim, action_dim = 17, 6
    # pytorch-maml-rl configs/maml/halfcheetah-{dir,vel}.yaml: meta-batch 40 tasks.
    paper_defaults = {"meta_batch_size": 40}

    def make_vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        return HalfCheetahTaskVectorEnv(num_envs, self.reward)


class HalfCheetahDirection(HalfCheetahTasks):
    name = "halfcheetah-dir"
    description = "HalfCheetah running forward or backward (Finn et al. 2017), 200-step episodes"
    reward = "direction"
    paper_returns = {"maml-rl": (170.4, 21.0), "anil-rl": (363.2, 14.8)}  # Raghu et al. 2020, Table 2

    def sample_tasks(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice([-1.0, 1.0], size=count)  # [count] directions, each with probability 1/2


class HalfCheetahVelocity(HalfCheetahTasks):
    name = "halfcheetah-vel"
    description = "HalfCheetah running at a goal velocity in [0, 2] (Finn et al. 2017), 200-step episodes"
    reward = "velocity"
    paper_returns = {"maml-rl": (-139.0, 18.9), "anil-rl": (-120.9, 6.3)}  # Raghu et al. 2020, Table 2

    def sample_tasks(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(*GOAL_VELOCITY_RANGE, size=count)  # [count] goal velocities


@harness.hookimpl
def register_environments(registry):
    registry.add(HalfCheetahDirection())
    registry.add(HalfCheetahVelocity())
