"""``harness run --algo maml|anil --env NAME``: the meta-RL branch of ``harness run`` (Finn et al. 2017, Section 5.3).

    harness run --algo anil --env 2d-navigation --out runs/anil-nav      # 500 iterations, then evaluation
    harness run --resume runs/anil-nav [--iterations 600]                 # continue (or extend) a run

Not a subcommand of its own: RL runs share ``harness run``'s flags where they
mean the same thing (``--seed``, ``--iterations``, ``--meta-batch-size``,
``--inner-lr``, ``--checkpoint-every``, ``--test-tasks`` (new tasks of the
final evaluation), ``--out``, ``--resume``).
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.rl.training import RLConfig, RLTrainer, resolve_rl_algorithm
from harness.run.files import read_json
from harness.run.rundir import refuse_taken, removed_if_start_fails

#: ``harness run`` flags an RL run takes; the image-only ones are refused rather than ignored.
IMAGE_ONLY_FLAGS = (
    "backbone",
    "inner_steps",
    "test_inner_steps",
    "outer_lr",
    "bn_mode",
    "split",
    "val_every",
    "val_tasks",
    "eval_batch_size",
    "log_every",
    "data_root",
)


def run_rl(plugins, args, env_name: str | None, stop=None) -> int:
    given = [f"--{name.replace('_', '-')}" for name in IMAGE_ONLY_FLAGS if getattr(args, name, None) is not None]
    if given:
        raise HarnessError(f"{', '.join(given)} do not apply to a reinforcement-learning run")
    overrides = {
        field: getattr(args, flag) for flag, field in RLConfig.FLAGS.items() if getattr(args, flag, None) is not None
    }
    if args.resume:
        run_dir = Path(args.resume)
        config = RLConfig.from_dict(read_json(run_dir / "config.json"))
        if set(overrides) - {"iterations"}:
            raise HarnessError("a resumed run keeps its config; only --iterations may be raised")
        config.iterations = overrides.get("iterations", config.iterations)
        trainer = RLTrainer(
            config, plugins, run_dir, progress=not args.no_progress, stop=stop, report_to=args.report_to
        )
        trainer.restore()
    else:
        if not args.algo:
            raise HarnessError("harness run needs --algo with --env (or --resume RUN_DIR)")
        algorithm = resolve_rl_algorithm(plugins, args.algo)
        env_plugin = plugins.environments.get(env_name)
        config = RLConfig(algo=algorithm.name, env=env_plugin.name, **env_plugin.paper_defaults)
        for name, value in overrides.items():
            minimum = 0 if name in ("seed", "checkpoint_every") else 1  # 0 = no periodic checkpoints
            if value < minimum:
                flag = next(f for f, field in RLConfig.FLAGS.items() if field == name)
                raise HarnessError(
                    f"--{flag.replace('_', '-')} must be {'positive' if minimum else 'non-negative'}, got {value}"
                )
            setattr(config, name, value)
        run_dir = Path(args.out) if args.out else config.default_run_dir()
        refuse_taken(run_dir)
        with removed_if_start_fails(run_dir):
            trainer = RLTrainer(
                config, plugins, run_dir, progress=not args.no_progress, stop=stop, report_to=args.report_to
            )
        trainer.metrics.truncate_after(-1)  # rows of an earlier start that never reached a checkpoint
    summary = trainer.train()
    test = summary["test"]
    paper = summary["paper_return"]
    print(
        f"{config.algo} on {config.env}: return after one adaptation step {test['return']:.2f} +- {test['ci95']:.2f} "
        f"({test['tasks']} new tasks; before adaptation {test['return_before_adaptation']:.2f}); "
        f"best policy from iteration {summary['tested_checkpoint']['step']}; "
        f"{summary['seconds_per_iteration']:.2f} s/iteration"
        + (f"; paper {paper[0]} +- {paper[1]} (3 seeds)" if paper else "")
        + f"; run directory {trainer.run_dir}"
    )
    return 0
