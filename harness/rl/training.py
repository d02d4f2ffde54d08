"""Meta-RL training behind ``harness run --algo maml|anil --env NAME``: rollouts, TRPO, checkpoints, evaluation.

Run directory as for few-shot runs (``harness.run.rundir``): ``config.json``
(with ``"kind": "rl"``), ``metrics.jsonl`` (one row per meta-iteration:
returns before and after adaptation, TRPO statistics), ``checkpoint.pt``
(policy, iteration, RNG states), ``best.pt`` (the policy with the highest
post-adaptation return during training: Raghu et al. 2020 "select the best
policy") and ``summary.json`` (evaluation of ``best.pt`` on new tasks).
RL runs on the CPU: the policy is a 100-unit MLP and the simulators are CPU code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.errors import HarnessError
from harness.evaluation.fewshot import mean_and_ci95
from harness.rl.policy import GaussianMLPPolicy
from harness.rl.rollouts import collect
from harness.run.config import RecordedConfig
from harness.run.devices import describe_device
from harness.run.files import load_torch, load_weights
from harness.run.lifecycle import RunLifecycle
from harness.run.stopping import StopConditions

EVAL_TASK_SEED = 2  # new tasks for evaluation, the same for every run (training tasks come from ``seed``)


@dataclass
class RLConfig(RecordedConfig):
    algo: str  # "maml-rl" or "anil-rl"
    env: str  # e.g. "2d-navigation"
    kind: str = "rl"
    seed: int = 0
    iterations: int = 500  # Finn et al. 2017 / pytorch-maml-rl configs: num-batches 500
    meta_batch_size: int = 40  # pytorch-maml-rl configs (HalfCheetah); environments override (2D-Navigation: 20)
    episodes_per_task: int = 20  # Finn et al. 2017, Section 5.3 / pytorch-maml-rl: fast-batch-size 20
    inner_lr: float = 0.1  # Finn et al. 2017, Section 5.3: alpha = 0.1
    max_kl: float = 0.01  # Finn et al. 2017, Section 5.3: TRPO max KL 0.01
    eval_tasks: int = 400  # new tasks for the final evaluation (10 batches of 40; our choice, CI over tasks)
    checkpoint_every: int = 0  # also keep checkpoints/step-XXXXXXX.pt every N iterations (0: off)

    #: ``harness run`` flag -> field, for the flags a meta-RL run takes (``harness.commands.run.rl``, ``reproduce``).
    FLAGS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "iterations": "iterations",
        "meta_batch_size": "meta_batch_size",
        "inner_lr": "inner_lr",
        "checkpoint_every": "checkpoint_every",
        "test_tasks": "eval_tasks",
    }

    @property
    def task(self) -> str:
        return self.env


def resolve_rl_algorithm(plugins, name: str):
    """``maml`` means ``maml-rl`` for an environment: the RL version of an algorithm is ``<name>-rl``."""
    for candidate in (name, f"{name}-rl"):
        if candidate in plugins.algorithms and plugins.algorithms.get(candidate).domain == "rl":
            return plugins.algorithms.get(candidate)
    valid = [n for n, obj, _ in plugins.algorithms.items() if obj.domain == "rl"]
    raise HarnessError(f"algorithm {name!r} has no reinforcement-learning version; RL algorithms: {', '.join(valid)}")


def evaluate_returns(
    algorithm, policy, env_plugin, config: RLConfig, num_tasks: int, seed: int = EVAL_TASK_SEED, chunk: int = 40
) -> dict:
    """Average return before and after one adaptation step on ``num_tasks`` new tasks (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    tasks = env_plugin.sample_tasks(num_tasks, rng)
    generator = torch.Generator().manual_seed(seed)
    pre_returns, post_returns = [], []
    env = env_plugin.make_vector_env(min(chunk, num_tasks) * config.episodes_per_task)
    try:
        for start in range(0, num_tasks, chunk):
            batch = tasks[start : start + chunk]
            if len(batch) < chunk and start:
                env.close()
                env = env_plugin.make_vector_env(len(batch) * config.episodes_per_task)
            pre, post = adapt_and_roll_out(
                algorithm, policy, env, env_plugin, batch, config, generator, seed * 1_000_003 + start
            )
            pre_returns.append(pre.returns())
            post_returns.append(post.returns())
    finally:
        env.close()
    pre_mean, pre_ci = mean_and_ci95(torch.cat(pre_returns).numpy())
    post_mean, post_ci = mean_and_ci95(torch.cat(post_returns).numpy())
    return {
        "return_before_adaptation": pre_mean,
        "ci95_before": pre_ci,
        "return": post_mean,
        "ci95": post_ci,
        "tasks": num_tasks,
    }


def adapt_and_roll_out(algorithm, policy, env, env_plugin, tasks, config: RLConfig, generator, seed):
    """Episodes with the meta-policy, one inner step per task, episodes with the adapted policies."""
    steps, episodes = env_plugin.episode_steps, config.episodes_per_task
    train = collect(env, policy, None, tasks, episodes, steps, generator, seed).with_advantages()
    adapted = algorithm.adapt_detached(policy, train, config.inner_lr)  # {name: [tasks, ...]}
    valid = collect(env, policy, adapted, tasks, episodes, steps, generator, seed + 1).with_advantages()
    return train, valid


class RLTrainer:
    def __init__(
        self,
        config: RLConfig,
        plugins,
        run_dir: Path,
        progress: bool = True,
        stop: StopConditions | None = None,
        report_to: list[str] | None = None,
    ):
        self.config, self.plugins = config, plugins
        self.env_plugin = plugins.environments.get(config.env)
        self.algorithm = resolve_rl_algorithm(plugins, config.algo)
        self.life = RunLifecycle(
            plugins,
            run_dir,
            config.iterations,
            config.checkpoint_every,
            f"{config.algo} {config.env}",
            progress=progress,
            stop=stop,
            report_to=report_to,
        )
        self.run_dir = self.life.run_dir
        torch.manual_seed(config.seed)
        self.policy = GaussianMLPPolicy(self.env_plugin.observation_dim, self.env_plugin.action_dim)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step, self.train_seconds = 0, 0.0
        self.best = {"return": -float("inf"), "step": 0}
        self.metrics = self.life.metrics

    def _state(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
            "rng": {"tasks": self.rng.bit_generator.state, "actions": self.generator.get_state()},
            "best": dict(self.best),
            "train_seconds": self.train_seconds,
        }

    def save_checkpoint(self) -> None:
        self.life.checkpoint(self.step, self._state())

    def restore(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():  # stopped or killed before its first checkpoint: start over, with its config
            self.life.truncate_metrics(-1)
            return
        state = load_torch(path, needs=("policy", "step", "best", "train_seconds", "rng"))
        load_weights(self.policy, state["policy"], path)
        self.step, self.best, self.train_seconds = state["step"], state["best"], state["train_seconds"]
        self.rng.bit_generator.state = state["rng"]["tasks"]
        self.generator.set_state(state["rng"]["actions"])
        self.life.truncate_metrics(self.step)

    def train(self) -> dict:
        config = self.config
        env = self.env_plugin.make_vector_env(config.meta_batch_size * config.episodes_per_task)
        loop_started, steps_before = time.perf_counter(), self.step
        try:
            with self.life.running(config.to_dict(), self.step):
                while self.step < config.iterations:
                    done_here = self.step - steps_before
                    self._stop_if_asked((time.perf_counter() - loop_started) / done_here if done_here else 0.0)
                    self._iteration(env)
                self._stop_if_asked(0.0)
                return self.test()
        finally:
            env.close()

    def _stop_if_asked(self, next_seconds: float) -> None:
        # Every iteration ends with a checkpoint; the one written here covers a stop before the first.
        self.life.stop_if_asked(self.step, next_seconds, self._state)

    def _iteration(self, env) -> None:
        config = self.config
        started = time.perf_counter()
        tasks = self.env_plugin.sample_tasks(config.meta_batch_size, self.rng)
        seed = int(self.rng.integers(2**31))
        train, valid = adapt_and_roll_out(
            self.algorithm, self.policy, env, self.env_plugin, tasks, config, self.generator, seed
        )
        sampled = time.perf_counter()
        collecting_policy = {k: v.clone() for k, v in self.policy.state_dict().items()}
        stats = self.algorithm.outer_step(self.policy, train, valid, config.inner_lr, config.max_kl)
        row = {
            "step": self.step + 1,
            "split": "train",
            "return_before_adaptation": train.returns().mean().item(),
            "return": valid.returns().mean().item(),
            **stats,
            "sampling_seconds": round(sampled - started, 3),
            "update_seconds": round(time.perf_counter() - sampled, 3),
        }
        if not np.isfinite(row["return"]) or not np.isfinite(stats["surrogate_before"]):
            raise self.life.non_finite(f"non-finite return or loss at iteration {self.step + 1}")
        if row["return"] > self.best["return"]:  # the policy that collected ``valid`` (before this update)
            self.best = {"return": row["return"], "step": self.step}
            self.life.save_best(self.step, {"policy": collecting_policy, "step": self.step, "config": config.to_dict()})
        self.step += 1
        self.train_seconds += time.perf_counter() - started
        self.life.log(row)
        self.save_checkpoint()
        self.life.advanced({"ret": f"{row['return']:.1f}", "best": f"{self.best['return']:.1f}"})

    def test(self) -> dict:
        best_path = self.run_dir / "best.pt"
        if best_path.exists():
            load_weights(self.policy, load_torch(best_path, needs=("policy",))["policy"], best_path)
        started = time.perf_counter()
        result = evaluate_returns(self.algorithm, self.policy, self.env_plugin, self.config, self.config.eval_tasks)
        summary = {
            "algo": self.config.algo,
            "env": self.config.env,
            "seed": self.config.seed,
            "test": result,
            "tested_checkpoint": {
                "file": best_path.name if best_path.exists() else "final model",
                "step": self.best["step"],
            },
            "best_train_return": self.best,
            "iterations": self.step,
            "train_seconds": round(self.train_seconds, 3),
            "seconds_per_iteration": round(self.train_seconds / max(self.step, 1), 4),
            "test_seconds": round(time.perf_counter() - started, 3),
            "paper_return": self.env_plugin.paper_returns.get(self.config.algo),
            "environment": describe_device(torch.device("cpu")),
        }
        return self.life.finish(summary)
