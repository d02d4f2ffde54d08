"""A reproduced table's values: each planned run evaluated as its row says, aggregated over seeds and set
beside the published value (``harness reproduce``; the plan is ``harness.reproduce.planning``).

A row's value is the run's own test result for ``fewshot``, else the row of its evaluator's output named by
``result`` (``row_keys``); several seeds give the mean and standard deviation over seeds (what the paper's
tables print: "mean and standard deviation of performance over three random initializations", Raghu et al.
2020, Section 4), one seed its interval over test tasks. ``agrees`` compares with the paper as the definition says (``compare``).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.reproduce.executors import execute
from harness.reproduce.planning import PlannedRun
from harness.run.files import read_json
from harness.run.integrity import recorded_sha256
from harness.run.provenance import file_sha256, given_suffix, option_text, same_source


def tested_checkpoint_sha256(run_dir: Path) -> str:
    """sha256 of the checkpoint a finished run's evaluations measure: its ``best.pt`` (else ``checkpoint.pt``)
    where the file is here, else the one ``summary.json`` recorded when the run tested it, so a run directory
    committed without its checkpoints still has its evaluations checked."""
    for name in ("best.pt", "checkpoint.pt"):
        if (run_dir / name).exists():
            return file_sha256(run_dir / name)
    recorded = recorded_sha256(run_dir / "best.pt")  # summary.json's tested_checkpoint, or SHA256SUMS
    if recorded is None:
        raise HarnessError(
            f"{run_dir} has no checkpoint (best.pt, checkpoint.pt) and its summary.json records none: its "
            "evaluations cannot be checked or run again; train the run again (harness reproduce without --no-train "
            "after moving the directory aside)"
        )
    return recorded[0]


def _evaluated_here(out: Path, run: PlannedRun) -> bool:
    """Whether ``out`` is this row's evaluation of the run's tested checkpoint: same evaluator, same options
    given, same checkpoint sha256 (an evaluation written while the run was still training is not)."""
    if not out.exists():
        return False
    recorded = read_json(out).get("provenance")
    expected = {
        "evaluator": run.evaluator,
        "given": {k: option_text(v) for k, v in sorted(run.resolved_options.items())},
        "checkpoint": {"sha256": tested_checkpoint_sha256(run.run_dir)},
    }
    return same_source(recorded, expected)


def evaluate_run(run: PlannedRun, data_root: str | None, cached: bool = True) -> dict:
    """``{"mean", "ci95", "tasks"}`` of one finished run for its row's evaluator (percent for accuracies)."""
    summary = read_json(run.run_dir / "summary.json")
    if run.kind == "rl":
        test = summary["test"]
        return {"mean": test["return"], "ci95": test["ci95"], "tasks": test["tasks"]}
    scale = 100 if run.unit == "%" else 1
    if run.evaluator == "fewshot" and not run.eval_data:
        test = summary["test"]
        return {"mean": scale * test["accuracy"], "ci95": scale * test["ci95"], "tasks": test["tasks"]}
    data = f"-data={run.eval_data}" if run.eval_data else ""
    out = (
        run.run_dir / f"eval-{run.evaluator}{given_suffix(run.resolved_options)}{data}.json"
    )  # as harness eval names it
    if not cached or not _evaluated_here(out, run):
        command = [sys.executable, "-m", "harness", "eval", str(run.run_dir), "--evaluator", run.evaluator]
        command += [f"-o{k}={v}" for k, v in run.resolved_options.items()]
        command += ["--data", run.eval_data] if run.eval_data else []
        if data_root:
            command += ["--data-root", data_root]
        if execute(command, str(run.run_dir) + ".log", os.cpu_count() or 1):
            raise HarnessError(f"evaluator {run.evaluator!r} failed on {run.run_dir}; log: {run.run_dir}.log")
    output = read_json(out)
    keys = row_keys(output["rows"])
    if run.result is None:
        index = 0
    elif run.result in keys:
        index = keys.index(run.result)
    elif cached:  # written by an earlier version of the evaluator, without that row: evaluate again
        return evaluate_run(run, data_root, cached=False)
    else:
        raise HarnessError(
            f"row {run.label!r}: evaluator {run.evaluator!r} gave no row {run.result!r} ({out}); its rows: "
            f"{', '.join(repr(k) for k in keys)}"
        )
    row = output["rows"][index]
    value = {"mean": scale * row["mean"], "ci95": scale * row["ci95"], "tasks": row["tasks"]}
    if output.get("figure"):
        value["figure"] = output["figure"]
    return value


def row_keys(rows: list[dict]) -> list[str]:
    """The name a definition's ``result = "KEY"`` gives each row of an evaluator's output.

    A row's own ``key`` if it has one (third-party evaluators may set it), else, for the
    bundled evaluators: the layer (``similarity``, ``weight-distance``: ``"body.0"`` ...
    ``"head"``); the layer and ``pre``/``post`` (``run-similarity``: ``"body.2 pre"``, the
    body means ``"body mean pre"`` and ``"body 1-3 mean pre"``); the pair (``seed-similarity``:
    ``"pre,post"``); ``"frozen 1-2"`` for the tested checkpoint of ``freeze`` and
    ``"checkpoint 2: frozen 1-2"`` for its second periodic checkpoint (``all_checkpoints``:
    numbered, so one definition serves budgets that checkpoint at different steps); else the
    row's ``name``.
    """
    periodic = list(dict.fromkeys(r["checkpoint"] for r in rows if str(r.get("checkpoint", "")).startswith("step-")))
    keys = []
    for row in rows:
        if "key" in row:
            keys.append(row["key"])
        elif "frozen" in row:
            where = f"checkpoint {periodic.index(row['checkpoint']) + 1}: " if row["checkpoint"] in periodic else ""
            keys.append(f"{where}frozen {row['frozen']}")
        elif "layer" in row and (" pre vs pre" in row["name"] or " post vs post" in row["name"]):
            when = "pre" if " pre vs pre" in row["name"] else "post"
            keys.append(
                f"{row['layer']} mean {when}"
                if row["layer"].startswith("body ") or row["layer"] == "body"
                else f"{row['layer']} {when}"
            )
        elif "layer" in row:
            keys.append(row["layer"])
        else:
            keys.append(row["name"])
    return keys


def aggregate(values: list[dict]) -> tuple[float, float]:
    """One seed: its mean and CI over test tasks. Several: mean and sample standard deviation over seeds."""
    means = [v["mean"] for v in values]
    if len(means) == 1:
        return means[0], values[0]["ci95"]
    mean = sum(means) / len(means)
    return mean, math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))


def paper_interval(paper: list | None) -> float:
    """The published ± (0 where the paper prints a value without one, e.g. a figure's legend)."""
    return float(paper[1]) if paper and len(paper) > 1 else 0.0


COMPARISONS = ("interval", "at_least", "at_most")


def agrees(mean: float, ci: float, paper: list | None, compare: str = "interval") -> str:
    """``yes`` when the measured interval and the paper's overlap; ``at_least`` / ``at_most``: the paper states a bound."""
    if not paper:
        return "n/a"
    if compare == "at_least":
        return "yes" if mean >= paper[0] else "no"
    if compare == "at_most":
        return "yes" if mean <= paper[0] else "no"
    return "yes" if abs(mean - paper[0]) <= ci + paper_interval(paper) else "no"


def speed_table(definition: dict, budget: str) -> list[dict]:
    """Rows of a ``kind = "speed"`` definition: speedup over MAML from step medians measured now."""

    from harness.plugin.manager import get_plugins
    from harness.speed.benchmarks import CONFIGS, interleaved_medians, make_step

    rounds = int(definition["budgets"][budget].get("rounds", 5))
    medians: dict[tuple, float] = {}

    def median(algorithm, config, phase):
        if (algorithm, config, phase) not in medians:
            if config not in CONFIGS:
                raise HarnessError(f"unknown benchmark config {config!r}; configs: {', '.join(CONFIGS)}")
            step = make_step(get_plugins(), algorithm, CONFIGS[config], phase, "cpu")
            medians[(algorithm, config, phase)] = interleaved_medians({"step": step}, rounds)["step"]
        return medians[(algorithm, config, phase)]

    rows = []
    for row in definition["rows"]:
        ratio = median("maml", row["config"], row["phase"]) / median(row["algorithm"], row["config"], row["phase"])
        seconds = {name: round(median(name, row["config"], row["phase"]), 4) for name in ("maml", row["algorithm"])}
        rows.append(
            {
                "label": row["label"],
                "mean": ratio,
                "ci95": 0.0,
                "seeds": 1,
                "paper": row.get("paper"),
                "compare": "at_least",
                "agree": agrees(ratio, 0.0, row.get("paper"), "at_least"),
                "unit": "x",
                "runs": [],
                "tasks": f"{rounds} rounds",
                "seconds": seconds,
            }
        )
    return rows


def not_run(reason: str) -> dict:
    """The measured fields of a row that has no measurement, and why."""
    return {"mean": None, "ci95": None, "seeds": 0, "agree": "not run", "tasks": "", "not_run": reason}


def measured_row(row: dict, mine: list[PlannedRun], data_root: str | None, partial: bool) -> dict:
    """One definition row: its runs' evaluations pooled over seeds beside the published value, or why not."""
    compare = row.get("compare", "interval")
    entry = {
        "label": row["label"],
        "paper": row.get("paper"),
        "compare": compare,
        "unit": mine[0].unit,
        "runs": [str(run.run_dir) for run in mine],
        **{key: row[key] for key in ("group", "column") if key in row},  # a scoreboard's cell
    }
    ready = [run for run in mine if not run.skipped and run.done and all(other.done for other in run.needs)]
    missing = [run for run in mine if run.skipped or not run.done] or [
        other for run in mine for other in run.needs if not other.done
    ]
    if missing and not (partial and ready):
        entry.update(not_run(missing[0].skipped or f"{missing[0].run_dir.name}: {missing[0].state}"))
        entry["runs"] = [str(run.run_dir) for run in mine if run.done]
        return entry
    if missing:  # --no-train: the seeds finished so far, and the others named
        entry["runs"] = [str(run.run_dir) for run in ready]
        entry["unfinished"] = [f"{run.run_dir.name}: {run.skipped or run.state}" for run in missing]
    try:
        values = [evaluate_run(run, data_root) for run in ready]
    except HarnessError as exc:
        if not partial:
            raise
        return {**entry, **not_run(f"evaluation failed: {exc}")}
    mean, ci = aggregate(values)
    entry.update(
        {
            "mean": mean,
            "ci95": ci,
            "seeds": len(values),
            "agree": agrees(mean, ci, row.get("paper"), compare),
            "tasks": values[0]["tasks"],
            "figures": sorted({v["figure"] for v in values if "figure" in v}),
        }
    )
    return entry


def table(definition: dict, runs: list[PlannedRun], data_root: str | None, budget: str, partial: bool = False) -> dict:
    """Measured beside published, one entry per row; rows without finished runs are "not run", with the reason.

    ``partial`` (``--no-train``): a row whose evaluation cannot run on what is there (e.g. a run
    directory copied without its checkpoints) is reported as not run with the error, instead of
    stopping the table.
    """
    rows = speed_table(definition, budget) if definition.get("kind") == "speed" else []
    for row in definition["rows"]:
        mine = [run for run in runs if run.label == row["label"]]
        if mine:
            rows.append(measured_row(row, mine, data_root, partial))
    budget_note = definition["budgets"][budget].get("note", "")
    return {
        "name": definition["name"],
        "title": definition["title"],
        "source": definition.get("source", ""),
        "budget": budget,
        "budget_note": budget_note,
        "rows": rows,
        **({"scoreboard": definition["scoreboard"]} if "scoreboard" in definition else {}),
    }
