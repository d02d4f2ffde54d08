"""``harness run``: meta-train an algorithm on a task spec, then test the best checkpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import harness
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError
from harness.plugin.algorithm import mark_ignored_options, refuse_ignored_options
from harness.run.config import HEAD_INITS, INNER_LOOPS, LAYER_KERNELS, RunConfig, resolve_config
from harness.run.devices import DEVICE_CHOICES
from harness.run.files import read_json
from harness.run.integrity import refuse_changed_config
from harness.run.resuming import newest_checkpoint, refuse_unresumable
from harness.run.rundir import refuse_taken, removed_if_start_fails
from harness.run.stopping import StopConditions, parse_duration
from harness.run.trackers import parse_report_to

# CLI flag -> RunConfig field, for values that override the paper defaults.
OVERRIDES = {
    "backbone": str,
    "seed": int,
    "iterations": int,
    "meta_batch_size": int,
    "inner_steps": int,
    "test_inner_steps": int,
    "inner_lr": float,
    "outer_lr": float,
    "bn_mode": str,
    "precision": str,
    "split": str,
    "val_every": int,
    "val_tasks": int,
    "test_tasks": int,
    "eval_batch_size": int,
    "checkpoint_every": int,
    "log_every": int,
    "head_init": str,
    "inner_loop": str,
    "layer_kernels": str,
    "device": str,
    "data_root": str,
}

#: What ``--resume`` may change: where and how fast the run goes, and how long it is (extended only).
RESUME_MAY_CHANGE = {"iterations", "device", "data_root"}


class RunCommand:
    name = "run"
    description = "meta-train ALGO on a task spec (e.g. --algo anil --data omniglot-20w1s) and test it"

    def add_arguments(self, parser):
        parser.add_argument("--algo", help="algorithm name (harness list)")
        parser.add_argument("--data", help="task spec <dataset>-<N>w<K>s[<Q>q], e.g. omniglot-20w1s")
        parser.add_argument(
            "--env",
            help="meta-RL environment (2d-navigation, halfcheetah-dir, halfcheetah-vel); the same as --data NAME",
        )
        parser.add_argument("--out", help="run directory (default results/runs/<algo>-<data>-seed<seed>-<time>)")
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint.pt")
        parser.add_argument("--no-download", action="store_true", help="never download missing data")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--report-to",
            metavar="TRACKERS",
            help="experiment trackers to report to, comma-separated (harness list trackers: tensorboard, mlflow, "
            "wandb), or none (default: none; a resumed run keeps the ones it had)",
        )
        parser.add_argument(
            "--time-limit",
            metavar="DURATION",
            help="stop cleanly before this much wall time has passed (e.g. 90m, 1h30m, 5400): "
            "checkpoint, resume command, exit status 75; SIGTERM/SIGINT/SIGUSR1 do the same",
        )
        for field, kind in OVERRIDES.items():
            flag = "--" + field.replace("_", "-")
            extra = {"choices": DEVICE_CHOICES} if field == "device" else {}
            help_text = f"override {field} (default: paper value)"
            if field == "precision":
                help_text = (
                    "fp32 (default) or bf16: compute body features under bfloat16 autocast, for algorithms "
                    "whose inner loop leaves the body fixed (anil, nil-train, multitask, multiclass)"
                )
            if field == "head_init":
                extra = {"choices": HEAD_INITS}
                help_text = (
                    "the head's initial weights: zero (default; all logits equal), normal (N(0, 1), the reference "
                    "TF code), default (PyTorch nn.Linear)"
                )
            if field == "inner_loop":
                extra = {"choices": INNER_LOOPS}
                help_text = (
                    "auto (default): the backbone's fast paths wherever the model has them, else the generic vmap "
                    "inner loop (a rule, so the same command gives the same numbers); fast or generic: that one"
                )
            if field == "layer_kernels":
                extra = {"choices": LAYER_KERNELS}
                help_text = (
                    "the fast paths' BatchNorm and activations: fused (default; a double backward of a few passes, "
                    "harness.engine.kernels) or composite (PyTorch's own)"
                )
            parser.add_argument(flag, type=kind, default=None, help=help_text, **extra)

    def run(self, args) -> int:

        plugins = args.plugins
        stop = StopConditions(parse_duration(args.time_limit) if args.time_limit else None)
        args.report_to = parse_report_to(args.report_to, plugins.trackers)
        if args.env and args.data:
            raise HarnessError("give either --data or --env, not both")
        task_name = args.env or args.data
        rl_resume = args.resume and read_json_if_exists(Path(args.resume) / "config.json").get("kind") == "rl"
        if rl_resume or task_name in plugins.environments:
            from harness.commands.run.rl import run_rl

            return run_rl(plugins, args, task_name, stop)
        if args.env:
            known = ", ".join(plugins.environments.names()) or "(none: install the rl extra)"
            raise HarnessError(f"unknown environment {args.env!r}; environments: {known}")
        trainer = resumed_trainer(plugins, args, stop) if args.resume else new_trainer(plugins, args, stop)
        inner = trainer.choose_inner_loop()
        if trainer.is_main:
            begun = f"from step {trainer.step} " if trainer.step else ""
            timed = "".join(
                f", {path} {seconds:.4f} s/step" for path, seconds in inner.get("seconds_per_step", {}).items()
            )
            print(
                f"harness: training {trainer.config.algo} on {trainer.config.data} {begun}to "
                f"{trainer.config.iterations} iterations (device {trainer.device}; inner loop {inner['path']}: "
                f"{inner['how']}{timed}); run directory {trainer.run_dir}",
                file=sys.stderr,
            )
        summary = trainer.train()
        if summary is None:  # a torchrun rank other than 0: rank 0 reports
            return 0
        test = summary["test"]
        print(
            f"{trainer.config.algo} on {trainer.config.data}: test accuracy {100 * test['accuracy']:.2f} +- "
            f"{100 * test['ci95']:.2f} % ({test['tasks']} tasks, {summary['tested_checkpoint']['file']} from step "
            f"{summary['tested_checkpoint']['step']}); {summary['seconds_per_iteration']:.3f} s/iteration; "
            f"run directory {trainer.run_dir}"
        )
        return 0


def resumed_trainer(plugins, args, stop):
    """The trainer of ``--resume RUN_DIR``: its config (extended, moved), its newest checkpoint restored."""

    run_dir = Path(args.resume)
    if not (run_dir / "config.json").exists():
        raise HarnessError(f"cannot resume: {run_dir} is not a run directory (no config.json)")
    config = RunConfig.from_dict(read_json(run_dir / "config.json"))
    refused = [
        f"--{name.replace('_', '-')}"
        for name in OVERRIDES
        if getattr(args, name) is not None and name not in RESUME_MAY_CHANGE
    ]
    if args.algo or args.data:
        refused = ["--algo" if args.algo else None, "--data" if args.data else None, *refused]
    if any(refused):
        raise HarnessError(
            f"a resumed run keeps its config: {', '.join(f for f in refused if f)} cannot be "
            f"changed; only --iterations (to extend it), --device and --data-root can"
        )
    if args.iterations is not None:
        if args.iterations < config.iterations:
            raise HarnessError(
                f"--iterations {args.iterations} with --resume: the run was set to "
                f"{config.iterations}; it can be extended, not shortened"
            )
        config.iterations = args.iterations
        config.sources["iterations"] = "command line (extended on --resume)"
    if args.device is not None:
        config.device = args.device
    if args.data_root is not None:
        config.data_root = args.data_root
    found = newest_checkpoint(run_dir)
    refuse_unresumable(run_dir, args.iterations, found[0] if found else None)
    if found:
        refuse_changed_config(found[0], found[1], read_json(run_dir / "config.json"))
    trainer = trainer_for(config, plugins, run_dir, args, stop)
    trainer.restore(found)
    return trainer


def new_trainer(plugins, args, stop):
    """The trainer of a new run: the paper's defaults for the task spec, the flags given, a new run directory."""

    if not args.algo or not args.data:
        raise HarnessError("harness run needs --algo and --data (or --resume RUN_DIR)")
    algorithm = plugins.algorithms.get(args.algo)  # fail early, listing valid names
    overrides = {field: getattr(args, field) for field in OVERRIDES}
    refuse_ignored_options(algorithm, overrides)
    spec = parse_task_spec(args.data)
    task_sampler = plugins.task_samplers.get(spec.dataset)
    config = resolve_config(args.algo, args.data, task_sampler, spec, overrides)
    mark_ignored_options(algorithm, config.sources)
    plugins.backbones.get(config.backbone)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not args.out:
        raise HarnessError("a run across processes (torchrun) needs --out, so that every rank uses one run directory")
    run_dir = Path(args.out) if args.out else config.default_run_dir()
    refuse_taken(run_dir)
    with removed_if_start_fails(run_dir):
        trainer = trainer_for(config, plugins, run_dir, args, stop)
    if trainer.is_main:
        trainer.metrics.truncate_after(-1)  # rows of an earlier start that never reached a checkpoint
    return trainer


def trainer_for(config, plugins, run_dir: Path, args, stop):
    """The trainer of ``config`` in ``run_dir`` with the command's download, progress, stop and tracker flags."""
    from harness.run.training import Trainer

    return Trainer(
        config,
        plugins,
        run_dir,
        download=not args.no_download,
        progress=not args.no_progress,
        stop=stop,
        report_to=args.report_to,
    )


def read_json_if_exists(path: Path) -> dict:
    return read_json(path) if path.exists() else {}


@harness.hookimpl
def register_commands(registry):
    registry.add(RunCommand())
