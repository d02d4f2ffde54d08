"""``harness eval RUN_DIR [--evaluator NAME]``: evaluate a trained run, print a table, save JSON."""

from __future__ import annotations

import os
from pathlib import Path

from tabulate import tabulate

import harness
from harness.data.root import resolve_data_root
from harness.errors import HarnessError
from harness.evaluation.fewshot import progress_shown
from harness.evaluation.options import resolve_options
from harness.run.devices import DEVICE_CHOICES, resolve_device
from harness.run.files import read_json, write_json
from harness.run.loaded_run import load_run
from harness.run.memory_estimate import activation_bytes_per_image, refuse_if_too_big
from harness.run.provenance import evaluation_provenance, given_suffix, keep_earlier
from harness.run.rundir import prepare_run_dir


def format_rows(rows: list[dict], percent: bool = True) -> str:
    """Evaluator rows as a table: accuracies in percent, other measures as they are."""
    scale, digits, value = (100, 2, "accuracy %") if percent else (1, 4, "mean")
    table = [
        [row["name"], f"{scale * row['mean']:.{digits}f}", f"{scale * row['ci95']:.{digits}f}", row["tasks"]]
        for row in rows
    ]
    return tabulate(table, headers=["evaluation", value, "95% CI +-", "tasks"], tablefmt="github")


def require_writable(run) -> None:
    """Results go into the run directory: say so before minutes of evaluation, not after."""
    if not os.access(run.path, os.W_OK):
        raise HarnessError(
            f"cannot write results into {run.path} (read-only); copy the run directory somewhere "
            f"writable and evaluate the copy"
        )


def open_run(plugins, run_dir, args, checkpoint=None):
    """A run directory ready for evaluators: model on the device, data root resolved."""
    run = load_run(Path(run_dir), plugins, checkpoint or getattr(args, "checkpoint", None))
    run.device = resolve_device(args.device)
    run.model.to(run.device)
    if run.algorithm.owns_parameters:
        run.algorithm.to(run.device)
    run.data_root = resolve_data_root(args.data_root or run.config.data_root)
    run.download = not args.no_download
    return run


class EvalCommand:
    name = "eval"
    description = "evaluate a run directory with an evaluator (default: fewshot on 600 test tasks)"

    def add_arguments(self, parser):
        parser.add_argument("run_dir", metavar="RUN_DIR")
        parser.add_argument(
            "more_runs",
            metavar="RUN_DIR",
            nargs="*",
            help="meta-RL only: more seeds of the same algorithm and environment (mean and std over runs)",
        )
        parser.add_argument("--evaluator", default="fewshot", help="evaluator name (harness list)")
        parser.add_argument("--checkpoint", help="checkpoint file to evaluate (default RUN_DIR/best.pt)")
        parser.add_argument(
            "--test-tasks", type=int, default=None, help="number of test tasks (default: the run's, 600)"
        )
        parser.add_argument(
            "--test-inner-steps", type=int, default=None, help="inner steps at test (default: the run's)"
        )
        parser.add_argument("--data-root", default=None, help="data root (default: the run's, then HARNESS_DATA_ROOT)")
        parser.add_argument(
            "--data",
            metavar="SPEC",
            help="evaluate on another data set's test classes (cross-domain), e.g. cub-5w5s for a run trained on "
            "miniimagenet-5w5s: the same ways and image size; the run's inner-loop settings (default: the run's data)",
        )
        parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
        parser.add_argument("--no-download", action="store_true")
        parser.add_argument(
            "-o",
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="evaluator option, repeatable (e.g. -o layers=1-3, -o head_iterations=2000)",
        )

    def run(self, args) -> int:

        plugins = args.plugins
        run_dirs = [Path(args.run_dir), *map(Path, args.more_runs)]
        if (run_dirs[0] / "config.json").exists() and read_json(run_dirs[0] / "config.json").get("kind") == "rl":
            from harness.commands.eval.rl import evaluate_rl_runs

            if args.evaluator != "fewshot" or args.option:
                raise HarnessError(
                    "meta-RL runs have one evaluation (return after one adaptation step); "
                    "--evaluator and -o do not apply"
                )

            return evaluate_rl_runs(plugins, run_dirs, args)
        if args.more_runs:
            raise HarnessError("several run directories are only accepted for meta-RL runs (seeds); give one RUN_DIR")
        evaluator = plugins.evaluators.get(args.evaluator)
        given, flags = {}, {}
        for item in args.option:
            key, separator, value = item.partition("=")
            if not separator or not key:
                raise HarnessError(f"malformed option {item!r}: expected KEY=VALUE")
            given[key.strip()] = value
        for flag, key in (("--test-tasks", "num_tasks"), ("--test-inner-steps", "test_inner_steps")):
            value = getattr(args, key.replace("num_tasks", "test_tasks"))
            if value is not None:
                if key in given:
                    raise HarnessError(f"{flag} and -o {key}= say the same thing; give one")
                given[key], flags[key] = value, flag
        _, out = evaluate_and_write(
            plugins, evaluator, args, given, flags, lambda options, given: eval_file_stem(evaluator.name, given, args)
        )
        print(f"written to {out}")
        return 0


def evaluate_and_write(plugins, evaluator, args, given: dict, flags: dict, file_stem, percent: bool = True):
    """The one path of ``harness eval`` and ``harness analyze``: open the run, type the options, evaluate,
    write ``RUN_DIR/<file_stem(options)>.json`` with its provenance (``harness.run.provenance``) and print the
    rows. The run directory is held for the evaluation: a run still training there is refused, and no
    training starts there meanwhile. Returns the result and the file."""
    run = open_run(plugins, args.run_dir, args)
    cross_domain = getattr(args, "data", None)  # harness analyze has no --data
    if cross_domain:
        switch_data(run, cross_domain, plugins)
    require_writable(run)
    prepare_run_dir(run.path, lock=True, busy="evaluate it when that has ended, or evaluate a copy")
    given = {key: value for key, value in given.items() if value is not None}
    options = resolve_options(evaluator, given, run, lambda path: open_run(plugins, path, args), flags)
    provenance = evaluation_provenance(evaluator.name, given, options, run.checkpoint_path)
    provenance["data"] = cross_domain or run.config.data
    out = run.path / f"{file_stem(options, given)}.json"
    refuse_oversized_chunk(run, options)
    with progress_shown():
        result = evaluator.evaluate(run, options)  # the run's config carries its precision and inner-loop path
    result.update({"evaluator": evaluator.name, "checkpoint": str(run.checkpoint_path), "provenance": provenance})
    keep_earlier(out, provenance)
    write_json(out, result)
    print(format_rows(result["rows"], percent=percent))
    report_to_trackers(plugins, run, result, out)
    return result, out


def report_to_trackers(plugins, run, result: dict, out: Path) -> None:
    """The evaluation, to the trackers the run reported to (``--report-to`` at training); nothing otherwise."""
    from harness.run.trackers import RunTrackers

    files = [out] + ([Path(result["figure"])] if result.get("figure") and Path(result["figure"]).is_file() else [])
    step = read_json(run.path / "summary.json").get("iterations", 0) if (run.path / "summary.json").exists() else 0
    RunTrackers(plugins.trackers, run.path, None).report_evaluation(run.config.to_dict(), step, result, files)


def switch_data(run, text: str, plugins) -> None:
    """Point ``run`` at another task spec's data (``--data``): its test classes, the run's model and inner loop.

    Refused in one line, before any evaluation, when the tasks have another number of ways than the
    run's head or the images another shape than the model was built for."""
    import dataclasses

    from harness.data.taskspec import parse_task_spec

    spec = parse_task_spec(text)
    sampler = plugins.task_samplers.get(spec.dataset)
    if spec.ways != run.spec.ways:
        raise HarnessError(
            f"--data {text}: {spec.ways}-way tasks, but {run.path} was trained on {run.config.data} and its head has "
            f"{run.spec.ways} outputs; evaluate {run.spec.ways}-way tasks"
        )
    run.spec, run.task_sampler = spec, sampler
    run.config = dataclasses.replace(run.config, split="default", queries=spec.queries or run.config.queries)
    test = run.open_split("test")
    shape, trained = (test.in_channels, test.image_size), (run.geometry["in_channels"], run.geometry["image_size"])
    if shape != trained:
        raise HarnessError(
            f"--data {text}: {shape[0]}-channel {shape[1]}x{shape[1]} images, but the model of {run.path} was built "
            f"for {trained[0]}-channel {trained[1]}x{trained[1]} ones ({run.config.data})"
        )


def refuse_oversized_chunk(run, options: dict) -> None:
    """An evaluation chunk (``eval_batch_size`` tasks) that cannot fit in memory is refused before any task."""
    tasks = min(run.config.eval_batch_size, int(options.get("num_tasks") or run.config.eval_batch_size))
    images = tasks * run.spec.ways * (run.spec.shots + int(options.get("queries") or run.config.queries))
    per_image = activation_bytes_per_image(run.model, run.geometry["in_channels"], run.geometry["image_size"])
    refuse_if_too_big(
        f"an evaluation chunk of {tasks} tasks", "the run's eval_batch_size", images, per_image, run.device
    )


def eval_file_stem(evaluator: str, given: dict, args=None) -> str:
    """``eval-NAME`` and the options given, e.g. ``eval-nil-num_tasks=20`` (``harness.run.provenance``)."""
    checkpoint = f"-checkpoint={Path(args.checkpoint).stem}" if args is not None and args.checkpoint else ""
    data = f"-data={args.data}" if args is not None and args.data else ""
    return f"eval-{evaluator}{given_suffix(given)}{checkpoint}{data}"


@harness.hookimpl
def register_commands(registry):
    registry.add(EvalCommand())
