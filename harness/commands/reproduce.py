"""``harness reproduce TABLE``: train and evaluate what a paper table needs, then print it beside the paper.

    harness reproduce table4 --budget cpu --data-root ../shared/data      # Omniglot rows, ~20 min on 2 cores
    harness reproduce table2 --budget cpu --workers 2                     # two runs at a time
    harness reproduce table2 --budget paper --seeds 3 --executor ray --address auto
    harness reproduce table4 --budget paper --time-limit 2h --data-root DATA  # stop cleanly; run again to continue
    harness reproduce table2 --budget paper --no-train                        # the table from finished runs only
    harness reproduce table2 --budget paper --row "Omniglot 20w1s, MAML"      # train one row; table as --no-train

Finished runs are skipped (keyed by a hash of the resolved config), started
ones resumed, so an interrupted sweep continues where it stopped. The table
is written to ``results/reproduced/<table>-<budget>.json`` and ``.md``; ``harness report``
renders all of them with figures and the ``results/README.md`` index. Rows
the budget does not run (``skip`` in the definition) or whose runs are not
finished (``--no-train``) are reported as "not run" with the reason.

``--time-limit`` (and SIGTERM / SIGINT / SIGUSR1) stop the runs cleanly at
an iteration boundary (``harness.run.stopping``); the command then prints how
to continue and exits with status 75, and the same command resumes them.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.run.files import write_json

RESULTS = Path("results")


class ReproduceCommand:
    name = "reproduce"
    description = "run the experiments behind a paper table (experiments/<table>.toml) and print it beside the paper"

    def add_arguments(self, parser):
        parser.add_argument("table", help="table name (e.g. table4) or a definition .toml file")
        parser.add_argument("--budget", default="cpu", help="paper or cpu (default cpu)")
        parser.add_argument("--seeds", type=int, default=1, help="seeds per row (default 1; the paper used 3 for RL)")
        parser.add_argument("--executor", default="local", choices=["local", "ray"])
        parser.add_argument("--workers", type=int, default=1, help="local executor: runs at a time (default 1)")
        parser.add_argument("--address", default=None, help="ray executor: address of an existing cluster")
        parser.add_argument("--root", default=str(RESULTS / "reproduce"), help="where run directories go")
        parser.add_argument("--results", default=str(RESULTS), help="where reproduced/<table>.json|md go")
        parser.add_argument("--data-root", default=None, help="dataset root for few-shot rows")
        parser.add_argument(
            "--plan",
            action="store_true",
            help="only list the rows, their published values and whether their runs are done",
        )
        parser.add_argument(
            "--no-train",
            action="store_true",
            help="train nothing: build the table from finished runs, the others reported as not run",
        )
        parser.add_argument(
            "--row",
            action="append",
            metavar="LABEL",
            help="train only this row (repeatable) and the rows it needs; the table is then built as with --no-train",
        )
        parser.add_argument(
            "--time-limit",
            metavar="DURATION",
            help="stop all runs cleanly before this much wall time (e.g. 90m); run again to continue",
        )
        parser.add_argument(
            "--report-to",
            metavar="TRACKERS",
            help="experiment trackers every run reports to (as harness run --report-to; default: none)",
        )

    def run(self, args) -> int:
        from harness.reproduce.definitions import load_definition
        from harness.reproduce.executors import run_all
        from harness.reproduce.planning import plan
        from harness.reproduce.tables import table
        from harness.run.stopping import RunStopped, StopConditions, parse_duration
        from harness.run.trackers import parse_report_to

        if args.seeds < 1 or args.workers < 1:
            raise HarnessError("--seeds and --workers must be at least 1")
        stop = StopConditions(parse_duration(args.time_limit) if args.time_limit else None)
        plugins = args.plugins
        report_to = parse_report_to(args.report_to, plugins.trackers)
        run_flags = ("--report-to", ",".join(report_to) or "none") if report_to is not None else ()
        definition = load_definition(args.table)
        runs = plan(plugins, definition, args.budget, args.seeds, Path(args.root))
        chosen = chosen_runs(runs, args.row) if args.row else runs
        if args.plan:
            print_plan(definition, chosen, args.budget)
            return 0
        if not args.no_train:
            failures, stopped = run_all(
                chosen, args.data_root, args.executor, args.workers, args.address, stop, run_flags
            )
            if failures:
                raise HarnessError(f"{len(failures)} run(s) failed, the others are kept: " + "; ".join(failures))
            if stopped:
                again = continue_command(args)
                raise RunStopped(args.root, 0, 0, stop.reason or "time limit reached", resume=again).with_message(
                    f"stopped ({stop.reason or 'time limit reached'}): {stopped} run(s) unfinished, their "
                    f"checkpoints kept; continue with: {again}"
                )
        partial = args.no_train or bool(args.row)
        write_table(table(definition, runs, args.data_root, args.budget, partial=partial), definition, args)
        return 0


def chosen_runs(runs: list, labels: list[str]) -> list:
    """The runs of the rows ``--row`` names and, transitively, the runs they evaluate (``@LABEL`` options)."""
    known = list(dict.fromkeys(run.label for run in runs))
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise HarnessError(f"--row {unknown[0]!r} names no row of this table; its rows: {'; '.join(known)}")
    wanted = {id(run) for run in runs if run.label in labels}
    pending = [run for run in runs if id(run) in wanted]
    while pending:
        for needed in pending.pop().needs:
            if id(needed) not in wanted:
                wanted.add(id(needed))
                pending.append(needed)
    return [run for run in runs if id(run) in wanted]


def print_plan(definition: dict, runs: list, budget: str) -> None:
    """``--plan``: each row's published value, seed, config key, state and run directory."""
    from tabulate import tabulate

    from harness.reproduce.tables import paper_interval

    rows = {row["label"]: row for row in definition["rows"]}

    def published(label):
        paper = rows[label].get("paper")
        bound = {"at_least": "≥ ", "at_most": "≤ "}.get(rows[label].get("compare", ""), "")
        if not paper:
            return "n/a"
        return f"{bound}{paper[0]}" + (f" ± {paper[1]}" if paper_interval(paper) and not bound else "")

    print(f"{definition['title']} (budget {budget}; paper: {definition.get('source', '')})")
    print(
        tabulate(
            [[r.label, published(r.label), r.seed, r.key, r.state, r.run_dir] for r in runs],
            headers=["row", "paper", "seed", "config key", "state", "run directory"],
            tablefmt="github",
        )
    )


def write_table(result: dict, definition: dict, args) -> None:
    """The measured table as ``RESULTS/reproduced/<table>-<budget>.json`` and ``.md``, printed too."""
    import torch

    from harness.reproduce.rendering import render_table
    from harness.run.devices import describe_device

    result.update(
        {"seeds": args.seeds, "date": time.strftime("%Y-%m-%d"), "machine": describe_device(torch.device("cpu"))}
    )
    out = Path(args.results) / "reproduced" / f"{definition['name']}-{args.budget}.json"  # one file per budget
    if args.no_train or args.row:
        refuse_unmeasuring(out, result, args.root)
    write_json(out, result)
    markdown = render_table(result)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"written to {out} and {out.with_suffix('.md')}")


def refuse_unmeasuring(out: Path, result: dict, root: str) -> None:
    """``--no-train`` rebuilds a table from the runs it finds; it never turns a measured row into "not run"."""
    if not out.exists():
        return
    from harness.run.files import read_json

    measured = {row["label"] for row in read_json(out).get("rows", []) if row.get("mean") is not None}
    lost = [row for row in result["rows"] if row["label"] in measured and row.get("mean") is None]
    if lost:
        raise HarnessError(
            f"{out} has {len(lost)} measured row(s) that --root {root} cannot measure again (first: "
            f"{lost[0]['label']!r}: {lost[0].get('not_run', 'not run')}); not rewritten: point --root at the runs, "
            f"or move {out.name} away"
        )


#: The flags of ``harness reproduce`` that a continuing call must repeat, with their defaults.
_REPEATED = (
    ("--budget", "budget"),
    ("--seeds", "seeds"),
    ("--executor", "executor"),
    ("--workers", "workers"),
    ("--address", "address"),
    ("--root", "root"),
    ("--results", "results"),
    ("--data-root", "data_root"),
    ("--time-limit", "time_limit"),
)


def continue_command(args) -> str:
    """The call that continues a stopped ``harness reproduce``: every flag given, shell-quoted."""
    words = ["harness", "reproduce", str(args.table), "--budget", args.budget]
    defaults = {"seeds": 1, "executor": "local", "workers": 1, "root": str(RESULTS / "reproduce")}
    defaults["results"] = str(RESULTS)
    for flag, name in _REPEATED[1:]:
        value = getattr(args, name)
        if value is not None and value != defaults.get(name):
            words += [flag, str(value)]
    for label in args.row or ():
        words += ["--row", label]
    return shlex.join(words)


@harness.hookimpl
def register_commands(registry):
    registry.add(ReproduceCommand())
