"""Did a change make an algorithm learn differently? A short fixed-seed run compared with a saved baseline.

``harness check --algo NAME --data SPEC`` trains NAME for a small stated budget (:data:`BUDGET`) on
real data and compares what it measured with a baseline saved earlier by the same command:

- **same machine** (host, CPU or GPU, torch threads, torch and harness versions): runs are
  bit-reproducible there (docs/usage.md, "Reproducibility"), so every metrics row and the test
  result must be equal exactly; any change to what the algorithm computes fails;
- **another machine**: kernels differ in rounding, so the test accuracies must agree within their
  95% confidence intervals (``|a - b| <= ci_a + ci_b``, the tables' agreement rule).

The report says which comparison was made. A baseline of another algorithm, data set, budget or
harness version is refused before training.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.run.files import read_json, read_metrics

BASELINE_KIND = "harness-check-baseline"
#: The stated budget: on Omniglot 5w1s, 100 iterations of 4 tasks, then 100 test tasks: 8-20 s per
#: bundled algorithm on 2 CPU cores (measured with harness check, nothing beside it but niced runs).
BUDGET = {"iterations": 100, "meta_batch_size": 4, "log_every": 10, "val_every": 50, "val_tasks": 20, "test_tasks": 100}
NOT_COMPARED = ("train_seconds",)  # wall time: differs between any two runs


def machine(device) -> dict:
    """What decides whether two runs can be bit-identical (docs/usage.md, "Reproducibility")."""
    from harness.run.devices import describe_device

    described = describe_device(device)
    return {"host": platform.node(), **{k: described[k] for k in ("device_name", "torch_threads", "torch", "harness")}}


def check_identity(algo: str, data: str, budget: dict) -> dict:
    return {"algorithm": algo, "data": data, "budget": budget, "harness": harness.__version__}


def load_baseline(path: Path, identity: dict) -> dict:
    if not path.exists():
        raise HarnessError(f"no baseline at {path}; save one with harness check ... --save {path}")
    baseline = read_json(path)
    if not isinstance(baseline, dict) or baseline.get("kind") != BASELINE_KIND:
        raise HarnessError(f"{path} is not a harness check baseline (no kind {BASELINE_KIND!r})")
    for key, value in identity.items():
        if baseline.get(key) != value:
            raise HarnessError(
                f"baseline {path} was measured with {key} {baseline.get(key)!r}, this check has {value!r}; "
                f"compare like with like, or save a new baseline with --save"
            )
    return baseline


def train(plugins, algo: str, data: str, budget: dict, data_root: str | None, keep: Path | None) -> dict:
    """Train and test once; ``{"metrics": rows without wall times, "test": {...}, "machine": {...}}``."""
    from harness.data.taskspec import parse_task_spec
    from harness.run.config import resolve_config
    from harness.run.training import Trainer

    spec = parse_task_spec(data)
    config = resolve_config(
        algo, data, plugins.task_samplers.get(spec.dataset), spec, {**budget, "data_root": data_root}
    )
    with tempfile.TemporaryDirectory(prefix="harness-check-") as scratch:
        run_dir = keep or Path(scratch) / "run"
        trainer = Trainer(config, plugins, run_dir, download=False, progress=False)
        summary = trainer.train()
        assert summary is not None  # one process: it tests
        metrics = run_dir / "metrics.jsonl"
        rows = read_metrics(metrics) if metrics.exists() else []  # an algorithm that never trains logs nothing
        rows = [{k: v for k, v in row.items() if k not in NOT_COMPARED} for row in rows]
    test = {key: summary["test"][key] for key in ("accuracy", "ci95", "tasks")}
    return {"metrics": rows, "test": test, "machine": machine(trainer.device)}


def compare(baseline: dict, measured: dict) -> tuple[str, list[str]]:
    """Which comparison was made, and one line per difference that fails it."""
    if baseline["machine"] == measured["machine"]:
        failures = [
            f"metrics row {number}: {got} where the baseline has {want}"
            for number, (got, want) in enumerate(zip(measured["metrics"], baseline["metrics"]), 1)
            if got != want
        ][:1]
        if len(measured["metrics"]) != len(baseline["metrics"]):
            failures.append(
                f"{len(measured['metrics'])} metrics rows where the baseline has {len(baseline['metrics'])}"
            )
        if measured["test"] != baseline["test"]:
            failures.append(f"test {measured['test']} where the baseline has {baseline['test']}")
        return "exact: the same machine as the baseline, so every metrics row and the test must be equal", failures
    got, want = measured["test"], baseline["test"]
    allowed = got["ci95"] + want["ci95"]
    failures = []
    if abs(got["accuracy"] - want["accuracy"]) > allowed:
        failures.append(
            f"test accuracy {100 * got['accuracy']:.2f} ± {100 * got['ci95']:.2f} % does not agree with the "
            f"baseline's {100 * want['accuracy']:.2f} ± {100 * want['ci95']:.2f} % (differ by more than {100 * allowed:.2f})"
        )
    other = ", ".join(f"{k} {v}" for k, v in baseline["machine"].items() if measured["machine"].get(k) != v)
    return f"within the 95% intervals of the test accuracy: the baseline was measured elsewhere ({other})", failures
