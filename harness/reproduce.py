"""Reproducing a paper table: definition -> runs keyed by config hash -> evaluations -> measured beside published.

A definition is a small TOML file in ``experiments/`` (``table2.toml``, ``table4.toml``):
a title, the paper source, budgets (``paper`` and ``cpu``: ``harness run`` overrides
for image and RL rows, each with a note) and rows (``label``, ``algo``, ``data`` or
``env``, optional ``evaluator``, its ``options`` and ``result_row`` (which row of its
output), ``unit`` (``%`` by default for few-shot rows; e.g. ``CCA`` for similarities,
reported as measured), and the published ``paper = [mean, ±]`` where the paper has the
value). An option value ``"@LABEL"`` names the run of row LABEL with the same seed
(``against = "@ANIL"`` for a MAML-vs-ANIL similarity); ``seed_offset = 1`` makes a
row's runs use seeds 1, 2, ... (a second network of the same configuration). Evaluators that draw a figure
(``similarity``, ``weight-distance``, ``freeze``) have it copied next to the table.

A definition with ``kind = "speed"`` (Table 6) trains nothing: its rows name a
benchmark ``config``, ``phase`` and ``algorithm``, and the measured value is that
algorithm's speedup over MAML from step medians of this machine
(``harness.benchmarks``), compared with the paper's ratio as a floor.

Each row x seed becomes one run directory ``<root>/runs/<algo>-<task>-seed<s>-<key>``
where ``key`` hashes the fully resolved config (defaults, dataset defaults, budget,
seed), so runs shared by several tables or rows are trained once and a finished run
(``summary.json`` present) is never repeated; a started one (``checkpoint.pt`` only)
is resumed. Runs execute as ``harness run`` subprocesses: several at a time on this
machine, or as Ray tasks (``--executor ray``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
#: Config fields that change where or how fast a run goes, not its result.
NOT_IN_KEY = {"device", "data_root", "eval_batch_size", "log_every"}


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
    result_row: int = 0  # which row of the evaluator's output (2 = "frozen 1-2" for freeze; negative from the end)
    unit: str = "%"
    resolved_options: dict = field(default_factory=dict)  # "@LABEL" replaced by that row's run directory

    @property
    def done(self) -> bool:
        return (self.run_dir / "summary.json").exists()

    def command(self, data_root: str | None) -> list[str]:
        if (self.run_dir / "checkpoint.pt").exists() and (self.run_dir / "config.json").exists():
            args = ["run", "--resume", str(self.run_dir)]
        else:
            flag = "--env" if self.kind == "rl" else "--data"
            args = ["run", "--algo", self.algo, flag, self.task, "--seed", str(self.seed), "--out", str(self.run_dir)]
            for name, value in self.overrides.items():
                args += [f"--{name.replace('_', '-')}", str(value)]
        if data_root and self.kind == "image":
            args += ["--data-root", data_root]
        return [sys.executable, "-m", "harness", *args, "--no-progress"]


def load_definition(name: str) -> dict:
    path = Path(name) if name.endswith(".toml") else EXPERIMENTS / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS.glob("*.toml")))
        raise HarnessError(f"unknown table {name!r}; defined tables: {known} (or give a .toml file)")
    try:
        definition = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path} is not valid TOML: {exc}") from None
    for needed in ("title", "budgets", "rows"):
        if needed not in definition:
            raise HarnessError(f"{path} has no {needed!r}")
    definition["name"] = path.stem
    return definition


def resolved_config(plugins, algo: str, task: str, kind: str, overrides: dict) -> dict:
    """The config ``harness run`` would write, as a dict (what the run key hashes)."""
    if kind == "rl":
        from harness.commands.run_rl import RL_FLAGS
        from harness.rl.training import RLConfig, resolve_rl_algorithm

        env = plugins.task_samplers.get(task)
        config = RLConfig(algo=resolve_rl_algorithm(plugins, algo).name, env=task, **env.paper_defaults)
        for name, value in overrides.items():
            setattr(config, RL_FLAGS.get(name, name), value)  # the flag's RLConfig field, as harness run maps it
        return config.to_dict()
    from harness.config import resolve_config
    from harness.taskspec import parse_task_spec

    spec = parse_task_spec(task)
    plugins.algorithms.get(algo)
    return resolve_config(algo, task, plugins.task_samplers.get(spec.dataset), spec, dict(overrides)).to_dict()


#: Fields added after runs were recorded, left out of the key at their default so older keys stay valid.
KEY_OMITS_DEFAULT = {"precision": "fp32"}


def config_key(config: dict) -> str:
    kept = {k: v for k, v in config.items()
            if k not in NOT_IN_KEY and not (k in KEY_OMITS_DEFAULT and v == KEY_OMITS_DEFAULT[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def plan(plugins, definition: dict, budget: str, seeds: int, root: Path) -> list[PlannedRun]:
    if budget not in definition["budgets"]:
        raise HarnessError(f"table {definition['name']!r} has no budget {budget!r}; budgets: "
                           f"{', '.join(definition['budgets'])}")
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
            config = resolved_config(plugins, row["algo"], task, kind, overrides)
            key = config_key(config)
            overrides.pop("seed")
            run_dir = root / "runs" / f"{config['algo']}-{task}-seed{seed}-{key}"
            unit = row.get("unit", "return" if kind == "rl" else "%")
            runs.append(PlannedRun(row["label"], row["algo"], task, kind, seed, overrides, key, run_dir,
                                   row.get("evaluator", "fewshot"), row.get("options", {}), row.get("result_row", 0),
                                   unit))
    # "@LABEL" names that row's run with the same seed index (seed minus the row's seed_offset).
    offsets = {row["label"]: row.get("seed_offset", 0) for row in definition["rows"]}
    by_label = {(run.label, run.seed - offsets[run.label]): run for run in runs}
    for run in runs:
        for name, value in run.options.items():
            if isinstance(value, str) and value.startswith("@"):
                other = by_label.get((value[1:], run.seed - offsets[run.label]))
                if other is None:
                    raise HarnessError(f"row {run.label!r} of {definition['name']}: option {name} = {value!r} names "
                                       f"no row; rows: {', '.join(sorted({r.label for r in runs}))}")
                value = str(other.run_dir)
            run.resolved_options[name] = value
    return runs


def execute(command: list[str], log: str, threads: int) -> int:
    """Run one ``harness`` command, output to ``log``; used by both executors."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(log, "a") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode


def run_all(runs: list[PlannedRun], data_root: str | None, executor: str = "local", workers: int = 1,
            address: str | None = None) -> list[str]:
    """Train every run that is not done; returns one line per failed run."""
    todo, seen = [], set()
    for run in runs:
        if not run.done and run.run_dir not in seen:
            seen.add(run.run_dir)
            todo.append(run)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    jobs = [(run.command(data_root), str(run.run_dir) + ".log") for run in todo]
    for run in todo:
        run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    if executor == "ray":
        codes = run_on_ray(jobs, address, threads)
    elif executor == "local":
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            codes = list(pool.map(lambda job: execute(job[0], job[1], threads), jobs))
    else:
        raise HarnessError(f"unknown executor {executor!r}; executors: local, ray")
    return [f"{run.run_dir} failed (exit {code}); log: {run.run_dir}.log" for run, code in zip(todo, codes) if code]


def run_on_ray(jobs, address: str | None, threads: int) -> list[int]:
    """Each run a Ray task (one GPU each where the cluster has GPUs), same command as the local executor."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'feature-reuse-harness[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False) if address else \
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=threads, num_gpus=gpus)(execute)
    return ray.get([task.remote(command, log, threads) for command, log in jobs])


def evaluate_run(run: PlannedRun, data_root: str | None) -> dict:
    """``{"mean", "ci95", "tasks"}`` of one finished run for its row's evaluator (percent for accuracies)."""
    summary = json.loads((run.run_dir / "summary.json").read_text())
    if run.kind == "rl":
        test = summary["test"]
        return {"mean": test["return"], "ci95": test["ci95"], "tasks": test["tasks"]}
    scale = 100 if run.unit == "%" else 1
    if run.evaluator == "fewshot":
        test = summary["test"]
        return {"mean": scale * test["accuracy"], "ci95": scale * test["ci95"], "tasks": test["tasks"]}
    written = run.run_dir / f"eval-{run.evaluator}.json"
    suffix = "".join(f"-{k}={str(v).lstrip('@')}" for k, v in sorted(run.options.items()))
    out = written.with_name(f"eval-{run.evaluator}{suffix}.json")  # one file per evaluator and options
    if not out.exists():
        command = [sys.executable, "-m", "harness", "eval", str(run.run_dir), "--evaluator", run.evaluator]
        command += [f"-o{k}={v}" for k, v in run.resolved_options.items()]
        if data_root:
            command += ["--data-root", data_root]
        if execute(command, str(run.run_dir) + ".log", os.cpu_count() or 1):
            raise HarnessError(f"evaluator {run.evaluator!r} failed on {run.run_dir}; log: {run.run_dir}.log")
        if suffix:
            written.replace(out)
    output = json.loads(out.read_text())
    row = output["rows"][run.result_row]
    value = {"mean": scale * row["mean"], "ci95": scale * row["ci95"], "tasks": row["tasks"]}
    if output.get("figure"):
        value["figure"] = output["figure"]
    return value


def aggregate(values: list[dict]) -> tuple[float, float]:
    """One seed: its mean and CI over test tasks. Several: mean over seeds and 1.96 x standard error."""
    means = [v["mean"] for v in values]
    if len(means) == 1:
        return means[0], values[0]["ci95"]
    mean = sum(means) / len(means)
    std = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
    return mean, 1.96 * std / math.sqrt(len(means))


def agrees(mean: float, ci: float, paper: list | None, compare: str = "interval") -> str:
    """``yes`` when the measured interval and the paper's overlap (``compare = "at_least"``: mean >= paper)."""
    if not paper:
        return "n/a"
    if compare == "at_least":
        return "yes" if mean >= paper[0] else "no"
    return "yes" if abs(mean - paper[0]) <= ci + paper[1] else "no"


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
        rows.append({"label": row["label"], "mean": ratio, "ci95": 0.0, "seeds": 1, "paper": row.get("paper"),
                     "agree": agrees(ratio, 0.0, row.get("paper"), "at_least"), "unit": "x", "runs": [],
                     "tasks": f"{rounds} rounds", "seconds": seconds})
    return rows


def table(definition: dict, runs: list[PlannedRun], data_root: str | None, budget: str) -> dict:
    rows = speed_table(definition, budget) if definition.get("kind") == "speed" else []
    for row in definition["rows"]:
        mine = [run for run in runs if run.label == row["label"]]
        if not mine:
            continue
        values = [evaluate_run(run, data_root) for run in mine]
        mean, ci = aggregate(values)
        rows.append({"label": row["label"], "mean": mean, "ci95": ci, "seeds": len(values), "paper": row.get("paper"),
                     "agree": agrees(mean, ci, row.get("paper")), "unit": mine[0].unit,
                     "runs": [str(run.run_dir) for run in mine], "tasks": values[0]["tasks"],
                     "figures": sorted({v["figure"] for v in values if "figure" in v})})
    budget_note = definition["budgets"][budget].get("note", "")
    return {"name": definition["name"], "title": definition["title"], "source": definition.get("source", ""),
            "budget": budget, "budget_note": budget_note, "rows": rows}
