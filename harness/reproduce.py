"""Reproducing a paper table: definition -> runs keyed by config hash -> evaluations -> measured beside published.

A definition is a small TOML file in ``experiments/`` (``table2.toml``, ``table4.toml``):
a title, the paper source, budgets (``paper`` and ``cpu``: ``harness run`` overrides
for image and RL rows, each with a note) and rows (``label``, ``algo``, ``data`` or
``env``, optional ``evaluator``, its ``options`` and ``result`` (which row of its
output, by key: ``"body.2"``, ``"frozen 1-4"``, ``"body mean pre"``; see ``row_keys``), ``unit`` (``%`` by default for few-shot rows; e.g. ``CCA`` for similarities,
reported as measured), and the published ``paper = [mean, ±]`` where the paper has the
value). An option value ``"@LABEL"`` names the run of row LABEL with the same seed
(``against = "@ANIL"`` for a MAML-vs-ANIL similarity); ``seed_offset = 1`` makes a
row's runs use seeds 1, 2, ... (a second network of the same configuration). Evaluators that draw a figure
(``similarity``, ``weight-distance``, ``freeze``) have it copied next to the table.

Every row of the paper's table is defined, with its published value quoted
from the paper (``paper = [mean, ±]``, or ``paper = [value]`` where the paper
prints no interval; ``compare = "at_least"`` / ``"at_most"`` where the paper
states a bound, e.g. Figure 2's "> 0.9"). A row the smaller budget cannot
afford names why in ``skip = { cpu = "reason" }``: it is planned and reported
as "not run" with that reason, and runs unchanged under the other budgets.

A definition with ``kind = "speed"`` (Table 6) trains nothing: its rows name a
benchmark ``config``, ``phase`` and ``algorithm``, and the measured value is that
algorithm's speedup over MAML from step medians of this machine
(``harness.benchmarks``), compared with the paper's ratio as a floor.

Each row x seed becomes one run directory ``<root>/runs/<algo>-<task>-seed<s>-<key>``
where ``key`` hashes the fully resolved config values (defaults, dataset defaults, budget,
seed; not where each value came from), so runs shared by several tables or rows are trained once and a finished run
(``summary.json`` present) is never repeated; a started one (``checkpoint.pt`` only)
is resumed. Runs execute as ``harness run`` subprocesses: several at a time on this
machine, or as Ray tasks (``--executor ray``); see ``harness.executors``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.executors import execute
from harness.provenance import file_sha256, given_suffix, option_text, same_source
from harness.rundir import held_by, read_json, read_metrics

#: Config fields that change where or how fast a run goes, not its result; ``sources`` is prose about
#: where each value came from (rewording a source must not orphan finished runs).
NOT_IN_KEY = {"device", "data_root", "eval_batch_size", "log_every", "sources", "inner_loop"}


@dataclass
class PlannedRun:
    label: str
    algo: str
    task: str  # task spec (image) or environment (rl)
    kind: str  # "image" or "rl"
    seed: int
    overrides: dict
    key: str
    run_dir: Path
    evaluator: str = "fewshot"
    options: dict = field(default_factory=dict)  # as written in the definition (names the eval output file)
    result: str | None = None  # which row of the evaluator's output, by key (row_keys); None: its first row
    unit: str = "%"
    resolved_options: dict = field(default_factory=dict)  # "@LABEL" replaced by that row's run directory
    skipped: str | None = None  # why this budget does not run the row (``skip`` in the definition)
    needs: list = field(default_factory=list)  # runs named by "@LABEL" options: evaluated only once they are done
    eval_data: str | None = None  # evaluated on this task spec's test classes (harness eval --data), not the run's

    @property
    def done(self) -> bool:
        return (self.run_dir / "summary.json").exists()

    @property
    def state(self) -> str:
        if self.skipped:
            return f"not run: {self.skipped}"
        if self.done:
            return "done"
        holder = held_by(self.run_dir) if self.run_dir.exists() else None
        in_use = f"; in use by {holder}" if holder else ""
        checkpoint = self.run_dir / "checkpoint.pt"
        if checkpoint.exists():
            metrics = self.run_dir / "metrics.jsonl"
            rows = read_metrics(metrics) if metrics.exists() else []
            step = rows[-1]["step"] if rows else 0
            return f"started (step {step}){in_use}"
        return f"to run{in_use}"

    def command(
        self, data_root: str | None, time_limit: float | None = None, run_flags: tuple[str, ...] = ()
    ) -> list[str]:
        """The ``harness run`` command line of this run (``run_flags``: ones every run gets, e.g. ``--report-to``)."""
        args = [*self._run_args(data_root), *run_flags]
        if time_limit is not None:
            args += ["--time-limit", str(max(1, int(time_limit)))]
        return [sys.executable, "-m", "harness", *args, "--no-progress"]

    def _run_args(self, data_root: str | None) -> list[str]:
        if (self.run_dir / "checkpoint.pt").exists() and (self.run_dir / "config.json").exists():
            args = ["run", "--resume", str(self.run_dir)]
        else:
            flag = "--env" if self.kind == "rl" else "--data"
            args = ["run", "--algo", self.algo, flag, self.task, "--seed", str(self.seed), "--out", str(self.run_dir)]
            for name, value in self.overrides.items():
                args += [f"--{name.replace('_', '-')}", str(value)]
        if data_root and self.kind == "image":
            args += ["--data-root", data_root]
        return args


def resolved_config(plugins, algo: str, task: str, kind: str, overrides: dict) -> dict:
    """The config ``harness run`` would write, as a dict (what the run key hashes)."""
    if kind == "rl":
        from harness.rl.training import RLConfig, resolve_rl_algorithm

        env = plugins.environments.get(task)
        config = RLConfig(algo=resolve_rl_algorithm(plugins, algo).name, env=task, **env.paper_defaults)
        for name, value in overrides.items():
            setattr(config, RLConfig.FLAGS.get(name, name), value)  # the flag's RLConfig field, as harness run maps it
        return config.to_dict()
    from harness.config import resolve_config
    from harness.taskspec import parse_task_spec

    spec = parse_task_spec(task)
    plugins.algorithms.get(algo)
    return resolve_config(algo, task, plugins.task_samplers.get(spec.dataset), spec, dict(overrides)).to_dict()


#: Fields added after runs were recorded, left out of the key at their default so older keys stay valid.
KEY_OMITS_DEFAULT = {"precision": "fp32", "head_init": "zero"}


def config_key(config: dict) -> str:
    kept = {
        k: v
        for k, v in config.items()
        if k not in NOT_IN_KEY and not (k in KEY_OMITS_DEFAULT and v == KEY_OMITS_DEFAULT[k])
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def plan(plugins, definition: dict, budget: str, seeds: int, root: Path) -> list[PlannedRun]:
    if budget not in definition["budgets"]:
        raise HarnessError(
            f"table {definition['name']!r} has no budget {budget!r}; budgets: {', '.join(definition['budgets'])}"
        )
    if definition.get("kind") == "speed":
        return []  # measured by table(), nothing to train
    runs = []
    for row in definition["rows"]:
        kind = "rl" if "env" in row else "image"
        task = row.get("env") or row.get("data")
        if not task:
            raise HarnessError(f"row {row.get('label', row)!r} of {definition['name']} needs 'data' or 'env'")
        budget_overrides = definition["budgets"][budget].get(kind, {})
        for seed in range(row.get("seed_offset", 0), row.get("seed_offset", 0) + seeds):
            overrides = {**budget_overrides, **row.get("overrides", {}), "seed": seed}
            try:
                config = resolved_config(plugins, row["algo"], task, kind, overrides)
            except HarnessError as exc:
                raise HarnessError(f"row {row['label']!r} of {definition['name']} (budget {budget}): {exc}") from None
            key = config_key(config)
            overrides.pop("seed")
            run_dir = root / "runs" / f"{config['algo']}-{task}-seed{seed}-{key}"
            unit = row.get("unit", "return" if kind == "rl" else "%")
            runs.append(
                PlannedRun(
                    row["label"],
                    row["algo"],
                    task,
                    kind,
                    seed,
                    overrides,
                    key,
                    run_dir,
                    row.get("evaluator", "fewshot"),
                    row.get("options", {}),
                    row.get("result"),
                    unit,
                    skipped=row.get("skip", {}).get(budget),
                    eval_data=row.get("eval_data"),
                )
            )
    # "@LABEL" names that row's run with the same seed index (seed minus the row's seed_offset).
    offsets = {row["label"]: row.get("seed_offset", 0) for row in definition["rows"]}
    by_label = {(run.label, run.seed - offsets[run.label]): run for run in runs}
    for run in runs:
        for name, value in run.options.items():
            if isinstance(value, str) and value.startswith("@"):
                other = by_label.get((value[1:], run.seed - offsets[run.label]))
                if other is None:
                    raise HarnessError(
                        f"row {run.label!r} of {definition['name']}: option {name} = {value!r} names "
                        f"no row; rows: {', '.join(sorted({r.label for r in runs}))}"
                    )
                if other.skipped and not run.skipped:
                    run.skipped = f"needs row {value[1:]!r}, not run: {other.skipped}"
                run.needs.append(other)
                value = str(other.run_dir)
            run.resolved_options[name] = value
    return runs


def _evaluated_here(out: Path, run: PlannedRun) -> bool:
    """Whether ``out`` is this row's evaluation of the run's tested checkpoint: same evaluator, same options
    given, same checkpoint sha256 (an evaluation written while the run was still training is not)."""
    if not out.exists():
        return False
    checkpoint = run.run_dir / "best.pt"
    checkpoint = checkpoint if checkpoint.exists() else run.run_dir / "checkpoint.pt"
    recorded = read_json(out).get("provenance")
    expected = {
        "evaluator": run.evaluator,
        "given": {k: option_text(v) for k, v in sorted(run.resolved_options.items())},
        "checkpoint": {"sha256": file_sha256(checkpoint)},
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
    """One seed: its mean and CI over test tasks. Several: mean over seeds and 1.96 x standard error."""
    means = [v["mean"] for v in values]
    if len(means) == 1:
        return means[0], values[0]["ci95"]
    mean = sum(means) / len(means)
    std = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
    return mean, 1.96 * std / math.sqrt(len(means))


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
    import statistics
    import time

    from harness.benchmarks import CONFIGS, make_step
    from harness.plugin_manager import get_plugins

    rounds = int(definition["budgets"][budget].get("rounds", 5))
    medians: dict[tuple, float] = {}

    def median(algorithm, config, phase):
        if (algorithm, config, phase) not in medians:
            if config not in CONFIGS:
                raise HarnessError(f"unknown benchmark config {config!r}; configs: {', '.join(CONFIGS)}")
            step = make_step(get_plugins(), algorithm, CONFIGS[config], phase, "cpu")
            step()  # warm-up
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
            medians[(algorithm, config, phase)] = statistics.median(times)
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
    missing = [run for run in mine if run.skipped or not run.done] or [
        other for run in mine for other in run.needs if not other.done
    ]
    if missing:
        entry.update(not_run(missing[0].skipped or f"{missing[0].run_dir.name}: {missing[0].state}"))
        entry["runs"] = [str(run.run_dir) for run in mine if run.done]
        return entry
    try:
        values = [evaluate_run(run, data_root) for run in mine]
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
