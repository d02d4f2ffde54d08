"""``harness eval RUN_DIR [RUN_DIR ...]`` for meta-RL runs: return after one adaptation step, beside the paper.

    harness eval runs/anil-nav-seed0 runs/anil-nav-seed1 runs/anil-nav-seed2

Each run's best policy (``best.pt``, Raghu et al. 2020: "select the best
policy") is adapted with one policy-gradient step on each of the run's
``eval_tasks`` new tasks (the same tasks for every run) and the average
return of the adapted policies is reported with a 95% CI over tasks. With
several runs (seeds), the last row is the mean and standard deviation over
runs, the statistic of the paper's Table 2.
"""

from __future__ import annotations

import numpy as np
from tabulate import tabulate

from harness.errors import HarnessError
from harness.rl.policy import GaussianMLPPolicy
from harness.rl.training import RLConfig, evaluate_returns, resolve_rl_algorithm
from harness.run.files import load_torch, load_weights, read_json, write_json


def evaluate_rl_runs(plugins, run_dirs, args) -> int:
    configs: list[RLConfig] = []
    for run_dir in run_dirs:
        if not (run_dir / "config.json").exists():
            raise HarnessError(f"{run_dir} is not a run directory (no config.json)")
        config = RLConfig.from_dict(read_json(run_dir / "config.json"))
        if configs and (config.algo, config.env) != (configs[0].algo, configs[0].env):
            raise HarnessError(
                f"{run_dir} is {config.algo} on {config.env}, not {configs[0].algo} on {configs[0].env}; "
                "evaluate one algorithm and environment at a time"
            )
        configs.append(config)
    env_plugin = plugins.environments.get(configs[0].env)
    algorithm = resolve_rl_algorithm(plugins, configs[0].algo)
    rows, returns = [], []
    for run_dir, config in zip(run_dirs, configs):
        checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "checkpoint.pt"
        state = load_torch(checkpoint, needs=("policy", "step"))
        policy = GaussianMLPPolicy(env_plugin.observation_dim, env_plugin.action_dim)
        load_weights(policy, state["policy"], checkpoint)
        tasks = args.test_tasks or config.eval_tasks
        result = evaluate_returns(algorithm, policy, env_plugin, config, tasks)
        result.update({"checkpoint": str(checkpoint), "step": state["step"]})
        write_json(run_dir / "eval-rl-return.json", result)
        returns.append(result["return"])
        rows.append(
            [
                str(run_dir),
                config.seed,
                state["step"],
                f"{result['return_before_adaptation']:.2f}",
                f"{result['return']:.2f} +- {result['ci95']:.2f}",
                tasks,
            ]
        )
    paper = env_plugin.paper_returns.get(configs[0].algo)
    if len(returns) > 1:
        rows.append(
            ["mean +- std over runs", "", "", "", f"{np.mean(returns):.2f} +- {np.std(returns, ddof=1):.2f}", ""]
        )
    print(
        tabulate(
            rows,
            headers=[
                "run",
                "seed",
                "best policy iteration",
                "return before adaptation",
                "return after 1 step (95% CI)",
                "tasks",
            ],
            tablefmt="github",
        )
    )
    if paper:
        print(
            f"paper (Raghu et al. 2020, Table 2, {configs[0].algo} on {configs[0].env}): "
            f"{paper[0]} +- {paper[1]} (mean +- std over 3 seeds)"
        )
    return 0
