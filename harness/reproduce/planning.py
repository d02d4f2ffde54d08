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
A budget may train its image runs until their validation stops rising, ``until_plateau = { every = N,
max_iterations = M }`` (``harness.reproduce.until_plateau``): a finished run still rising is lengthened in
its own directory.

A definition with ``kind = "speed"`` (Table 6) trains nothing: its rows name a
benchmark ``config``, ``phase`` and ``algorithm``, and the measured value is that
algorithm's speedup over MAML from step medians of this machine
(``harness.speed.benchmarks``), compared with the paper's ratio as a floor.

Each row x seed becomes one run directory ``<root>/runs/<algo>-<task>-seed<s>-<key>``
where ``key`` hashes the fully resolved config values (defaults, dataset defaults, budget,
seed; not where each value came from), so runs shared by several tables or rows are trained once and a finished run
(``summary.json`` present) is never repeated; a started one (``checkpoint.pt`` only)
is resumed. Runs execute as ``harness run`` subprocesses: several at a time on this
machine, or as Ray tasks (``--executor ray``); see ``harness.reproduce.executors``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.reproduce.until_plateau import lengthen_to
from harness.run.rundir import held_by, run_state

#: Config fields that change where or how fast a run goes, not its result; ``sources`` is prose about
#: where each value came from (rewording a source must not orphan finished runs).
NOT_IN_KEY = {"device", "data_root", "eval_batch_size", "log_every", "sources", "inner_loop", "layer_kernels"}


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
    until_plateau: dict | None = None  # the budget's: lengthened while its validation still rises
    progress_spans_run: bool = False  # the algorithm's: never lengthened (harness.reproduce.until_plateau)

    @property
    def lengthen_to(self) -> int | None:
        """The iterations this finished run is still to be trained to (``harness.reproduce.until_plateau``)."""
        return lengthen_to(self.run_dir, self.until_plateau, self.progress_spans_run)

    @property
    def done(self) -> bool:
        return (self.run_dir / "summary.json").exists() and self.lengthen_to is None

    @property
    def state(self) -> str:
        if self.skipped:
            return f"not run: {self.skipped}"
        if self.done:
            return "done"
        holder = held_by(self.run_dir) if self.run_dir.exists() else None
        in_use = f"; in use by {holder}" if holder else ""
        if (self.run_dir / "summary.json").exists():
            return f"finished, validation still rising: trained on to {self.lengthen_to:,} iterations{in_use}"
        return f"{run_state(self.run_dir) or 'to run'}{in_use}"

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
            longer = self.lengthen_to
            if longer is not None:
                args += ["--iterations", str(longer)]
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
    from harness.data.taskspec import parse_task_spec
    from harness.run.config import resolve_config

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
                    until_plateau=definition["budgets"][budget].get("until_plateau") if kind == "image" else None,
                    progress_spans_run=kind == "image" and plugins.algorithms.get(row["algo"]).progress_spans_run,
                )
            )
    resolve_references(runs, definition)
    return runs


def resolve_references(runs: list[PlannedRun], definition: dict) -> None:
    """An option ``"@LABEL"`` names that row's run with the same seed index (seed minus the row's seed_offset)."""
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
