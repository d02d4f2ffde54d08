"""Meta-RL: environments, advantages, conjugate gradient and TRPO, MAML-RL / ANIL-RL, runs.

Needs the ``rl`` extra (gymnasium, mujoco), which the README's test command installs.
"""

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from harness.plugin.manager import get_plugins
from harness.rl.advantages import (
    baseline_features,
    discounted_returns,
    gae,
    linear_baseline_values,
    normalise,
)
from harness.rl.policy import GaussianMLPPolicy, distribution
from harness.rl.rollouts import TaskEpisodes, collect
from harness.rl.trpo import conjugate_gradient, fisher_vector_product, trpo_step


def env_plugin(name):
    return get_plugins().environments.get(name)


# -- environments ------------------------------------------------------------


def test_navigation_steps_by_hand():
    env = env_plugin("2d-navigation").make_vector_env(2)
    obs, _ = env.reset(options={"tasks": [[0.3, -0.2], [0.005, 0.0]]})
    assert obs.tolist() == [[0, 0], [0, 0]]
    obs, reward, terminated, truncated, _ = env.step(np.array([[0.5, -0.05], [0.0, 0.0]]))
    assert np.allclose(obs, [[0.1, -0.05], [0.0, 0.0]])  # the 0.5 is clipped to 0.1
    assert np.allclose(reward, [-math.hypot(0.2, 0.15), -0.005])
    assert terminated.tolist() == [False, True]  # within 0.01 of the goal on both axes
    obs, reward, *_ = env.step(np.array([[0.1, -0.1], [0.0, 0.0]]))
    assert np.allclose(obs[0], [0.2, -0.15]) and np.isclose(reward[0], -math.hypot(0.1, 0.05))


@pytest.mark.parametrize("name", ["halfcheetah-dir", "halfcheetah-vel"])
def test_halfcheetah_matches_gymnasium_dynamics_and_task_reward(name):
    import gymnasium as gym

    env = env_plugin(name).make_vector_env(3)
    tasks = [-1.0, 1.0, 1.0] if name.endswith("dir") else [0.0, 0.7, 2.0]
    env.reset(seed=0, options={"tasks": tasks})
    reference = gym.make("HalfCheetah-v5").unwrapped
    reference.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, (3, 6))  # beyond the control range: clipped
    for _ in range(3):
        reference.set_state(env.state[1, 1:10], env.state[1, 10:])
        obs, reward, _, _, info = env.step(actions)
        ref_obs, _, _, _, ref_info = reference.step(actions[1].astype(np.float32))
        assert np.allclose(obs[1], ref_obs, atol=1e-5)
        assert np.isclose(info["forward_velocity"][1], ref_info["x_velocity"], atol=1e-5)
        velocity, cost = info["forward_velocity"], 0.05 * (np.clip(actions, -1, 1) ** 2).sum(-1)
        expected = np.array(tasks) * velocity - cost if name.endswith("dir") else -np.abs(velocity - tasks) - cost
        assert np.allclose(reward, expected)
    env.close()


def test_task_sampling_ranges():
    rng = np.random.default_rng(0)
    goals = env_plugin("2d-navigation").sample_tasks(2000, rng)
    assert goals.shape == (2000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5 and goals.min() < -0.49
    velocities = env_plugin("halfcheetah-vel").sample_tasks(2000, rng)
    assert velocities.min() >= 0 and velocities.max() <= 2 and velocities.max() > 1.99
    directions = env_plugin("halfcheetah-dir").sample_tasks(2000, rng)
    assert set(directions.tolist()) == {-1.0, 1.0} and 900 < (directions > 0).sum() < 1100


# -- advantages --------------------------------------------------------------


def test_returns_and_gae_worked_example():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 9.0]])  # [T=3, E=2]; episode 1 ends after step 2
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    rewards = rewards * mask
    assert torch.allclose(discounted_returns(rewards, mask, gamma=0.5)[:, 0], torch.tensor([1.75, 1.5, 1.0]))
    assert torch.allclose(discounted_returns(rewards, mask, gamma=0.5)[:, 1], torch.tensor([3.0, 2.0, 0.0]))
    values = torch.ones(3, 2)
    # lambda = 0: one-step TD errors r + gamma V' - V, with V = 0 after the episode's end
    assert torch.allclose(gae(rewards, values, mask, gamma=0.5, lam=0.0)[:, 0], torch.tensor([0.5, 0.5, 0.0]))
    assert torch.allclose(gae(rewards, values, mask, gamma=0.5, lam=0.0)[:, 1], torch.tensor([1.5, 1.0, 0.0]))
    # lambda = 1: Monte Carlo return minus the baseline
    full = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    assert torch.allclose(full, (discounted_returns(rewards, mask, 0.5) - values) * mask)
    normalised = normalise(full, mask)
    valid = normalised[mask.bool()]
    assert abs(valid.mean()) < 1e-6 and abs(valid.std(unbiased=False) - 1) < 1e-4 and normalised[2, 1] == 0


def test_linear_baseline_fits_returns_that_are_linear_in_its_features():
    positions = torch.tensor([-2.0, -1.0, -0.5, 0.5, 1.0, 3.0])  # one single-step episode per position
    observations = torch.stack([positions, torch.zeros(6)], dim=1).unsqueeze(0)  # [T=1, E=6, 2]
    rewards = (2 * positions - 0.5 * positions**2 + 1).unsqueeze(0)  # in the span of [o, o^2, 1]
    values = linear_baseline_values(observations, rewards, torch.ones(1, 6))
    assert torch.allclose(values, rewards, atol=1e-3)
    noisy = rewards + torch.tensor([[0.3, -0.3, 0.3, -0.3, 0.3, -0.3]])  # not in the span: least squares, not exact
    residual = linear_baseline_values(observations, noisy, torch.ones(1, 6)) - noisy
    features = baseline_features(observations, torch.ones(1, 6)).flatten(0, 1)
    assert residual.abs().max() > 0.01 and torch.allclose(features.T @ residual.flatten(), torch.zeros(8), atol=1e-3)


# -- conjugate gradient and TRPO --------------------------------------------


def test_conjugate_gradient_solves_a_known_system():
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    matrix = basis @ basis.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, iterations=6)
    assert torch.allclose(x, torch.linalg.solve(matrix, b), atol=1e-8)


def test_fisher_vector_product_is_the_kl_hessian():
    mean = torch.zeros(3, requires_grad=True)
    old = distribution(torch.tensor([0.2, -0.1, 0.4]), torch.full((3,), 0.5))
    kl = torch.distributions.kl_divergence(old, distribution(mean, torch.full((3,), 0.5)))
    vector = torch.tensor([1.0, -2.0, 0.5])
    product = fisher_vector_product(kl, [mean], damping=0.0)(vector)
    assert torch.allclose(product, vector / 0.25)  # Hessian of KL in the mean: I / std^2


def test_trpo_step_improves_and_respects_the_kl_bound():
    torch.manual_seed(0)
    mean = torch.zeros(2, requires_grad=True)
    actions = torch.randn(500, 2)
    advantages = actions[:, 0] - actions[:, 1]  # rewards moving the mean towards (+, -)
    old = distribution(torch.zeros(500, 2), torch.ones(500, 2))
    old_log_prob = old.log_prob(actions)

    def surrogate():
        new = distribution(mean.expand(500, 2), torch.ones(500, 2))
        loss = -(torch.exp(new.log_prob(actions) - old_log_prob) * advantages).mean()
        return loss, torch.distributions.kl_divergence(old, new).mean()

    stats = trpo_step([mean], surrogate, max_kl=0.01)
    assert stats["accepted"] and stats["surrogate_after"] < stats["surrogate_before"]
    assert 0 < stats["kl"] <= 0.01
    assert mean[0] > 0 > mean[1]
    kl = 0.5 * (mean.detach() ** 2).sum()  # KL between unit Gaussians
    assert kl <= 0.01 + 1e-6


# -- MAML-RL and ANIL-RL -----------------------------------------------------


def random_episodes(tasks=3, steps=6, episodes=4, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype)
    mask = torch.ones(tasks, steps, episodes, dtype=dtype)
    return TaskEpisodes(
        rand(tasks, steps, episodes, 2),
        rand(tasks, steps, episodes, 2),
        rand(tasks, steps, episodes),
        mask,
        rand(tasks, steps, episodes),
    )


@pytest.mark.parametrize("name,adapted", [("maml-rl", None), ("anil-rl", {"head.weight", "head.bias"})])
def test_inner_step_adapts_the_right_layers_and_matches_per_task_autograd(name, adapted):
    torch.manual_seed(0)
    algorithm = get_plugins().algorithms.get(name)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8, 8))
    episodes = random_episodes()
    batched = algorithm.adapt_detached(policy, episodes, inner_lr=0.1)
    for i in range(episodes.num_tasks):
        task = episodes.task(i)
        params = dict(policy.named_parameters())
        mean, std = policy(task.observations)
        loss = -(distribution(mean, std).log_prob(task.actions) * task.advantages).mean()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        for parameter_name, value in params.items():
            changes = adapted is None or parameter_name in adapted
            expected = value - 0.1 * grads[parameter_name] if changes else value
            assert torch.allclose(batched[parameter_name][i], expected, atol=1e-6), parameter_name
            assert changes == (not torch.equal(batched[parameter_name][i], value)), parameter_name


def test_meta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    algorithm = get_plugins().algorithms.get("maml-rl")
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(5, 5)).double()
    train, valid = random_episodes(dtype=torch.float64), random_episodes(seed=1, dtype=torch.float64)

    def meta_loss():  # post-adaptation policy-gradient loss, through the inner step
        adapted = algorithm.adapt(policy, train, 0.5, create_graph=True)
        mean, std = torch.func.vmap(lambda p, o: torch.func.functional_call(policy, p, (o,)))(
            adapted, valid.observations
        )
        return -(distribution(mean, std).log_prob(valid.actions) * valid.advantages).mean()

    grads = torch.autograd.grad(meta_loss(), list(policy.parameters()))
    direction = [torch.randn_like(p) for p in policy.parameters()]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(policy.parameters(), direction):
            p.add_(eps * d)
    plus = meta_loss().item()
    with torch.no_grad():
        for p, d in zip(policy.parameters(), direction):
            p.sub_(2 * eps * d)
    minus = meta_loss().item()
    assert abs((plus - minus) / (2 * eps) - analytic.item()) < 1e-6 * max(1.0, abs(analytic.item()))


def test_collect_masks_steps_after_termination():
    plugin = env_plugin("2d-navigation")
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4, 4))
    with torch.no_grad():
        policy.log_std.fill_(-20.0)  # deterministic: zero head, zero actions
        policy.head.weight.zero_()
        policy.head.bias.zero_()
    tasks = np.array([[0.0, 0.005], [0.3, 0.3]])  # the first goal is reached at once (within 0.01)
    episodes = collect(plugin.make_vector_env(4), policy, None, tasks, 2, 5, torch.Generator().manual_seed(0), 0)
    assert episodes.mask.shape == (2, 5, 2)
    assert episodes.mask[0, 0].tolist() == [1, 1] and episodes.mask[0, 1:].sum() == 0
    assert episodes.mask[1].sum() == 10 and torch.all(episodes.rewards[0, 1:] == 0)
    assert torch.allclose(episodes.returns(), torch.tensor([-0.005, -5 * math.hypot(0.3, 0.3)]), atol=1e-5)


# -- runs --------------------------------------------------------------------


def test_short_navigation_run_improves_its_return_and_resumes_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["--algo", "maml", "--env", "2d-navigation", "--meta-batch-size", "5", "--no-progress"]
    result = run_cli("run", *common, "--iterations", "8", "--test-tasks", "40", "--out", straight)
    assert result.returncode == 0, result.stderr
    assert "maml-rl on 2d-navigation: return after one adaptation step" in result.stdout
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(row["kl"] <= 0.01 for row in rows)
    assert np.mean([r["return"] for r in rows[-2:]]) > np.mean([r["return"] for r in rows[:2]]) + 5
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["test"]["return"] > summary["test"]["return_before_adaptation"]  # adaptation helps
    assert summary["paper_return"] == [-20.3, 3.2]

    assert run_cli("run", *common, "--iterations", "3", "--test-tasks", "40", "--out", resumed).returncode == 0
    result = run_cli("run", "--resume", resumed, "--iterations", "8", "--no-progress")
    assert result.returncode == 0, result.stderr
    again = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    timing = {"sampling_seconds", "update_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows
    ]

    result = run_cli("eval", straight, resumed, "--test-tasks", "10")
    assert result.returncode == 0, result.stderr
    assert "mean +- std over runs" in result.stdout and "-20.3 +- 3.2" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--algo", "fomaml", "--env", "2d-navigation"],
            "harness: error: algorithm 'fomaml' has no reinforcement-learning version; RL algorithms: anil-rl, maml-rl",
        ),
        (
            ["--algo", "anil", "--env", "cartpole"],
            "harness: error: unknown environment 'cartpole'; environments: 2d-navigation, halfcheetah-dir, halfcheetah-vel",
        ),
        (
            ["--algo", "anil", "--env", "2d-navigation", "--data", "omniglot-20w1s"],
            "harness: error: give either --data or --env, not both",
        ),
        (
            ["--algo", "anil", "--env", "2d-navigation", "--inner-steps", "3"],
            "harness: error: --inner-steps do not apply to a reinforcement-learning run",
        ),
        (
            ["--algo", "anil", "--env", "2d-navigation", "--iterations", "0"],
            "harness: error: --iterations must be positive, got 0",
        ),
    ],
)
def test_bad_rl_input_is_one_line(args, message, tmp_path):
    result = run_cli("run", *args, "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_halfcheetah_runs_end_to_end(tmp_path):
    result = run_cli(
        "run",
        "--algo",
        "anil",
        "--env",
        "halfcheetah-vel",
        "--iterations",
        "1",
        "--meta-batch-size",
        "2",
        "--test-tasks",
        "2",
        "--out",
        tmp_path / "run",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 1 and math.isfinite(summary["test"]["return"])
