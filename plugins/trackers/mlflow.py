"""``--report-to mlflow``: one MLflow run per harness run, where ``MLFLOW_TRACKING_URI`` points.

Unset, MLflow's own default (``sqlite:///mlflow.db``) is used where the full ``mlflow`` package is
installed; with only the tracking client (``mlflow-skinny``, this extra), which has no database
driver, runs go to the file store ``./mlruns`` instead (``mlflow ui --backend-store-uri ./mlruns``).

The experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``harness``), the run name the run directory's.
The config's top-level values are parameters (the full ``config.json``, with where each value came
from, is an artifact); metrics rows are metrics at their steps; ``summary.json``, the tested
checkpoint and evaluator figures are artifacts (a later ``harness eval`` / ``analyze`` adds its
rows as metrics and its files under ``evaluations/``). A resumed run reopens the same MLflow run by its id;
the rows it recomputes past its checkpoint are logged again with the values they had.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import harness
from harness.run.trackers import Tracker, TrackerRun

#: MLflow's limit on a parameter value's length.
PARAM_VALUE_LIMIT = 6000


class MLflowRun(TrackerRun):
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = _milliseconds()
        metrics = [Metric(_metric_name(name), value, now, step) for name, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: dict[str, Any], scalars: dict[str, float], artifacts: list[Path]) -> None:
        self.log_scalars(summary.get("iterations", 0), scalars)
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "KILLED")  # stopped; --resume reopens it

    def report_evaluation(self, step: int, scalars: dict[str, float], files: list[Path]) -> None:
        self.log_scalars(step, scalars)
        for path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path="evaluations")
        self.client.set_terminated(self.run_id, "FINISHED")

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}


class MLflowTracker(Tracker):
    name = "mlflow"
    description = "an MLflow run (MLFLOW_TRACKING_URI): config as parameters, metrics, summary and checkpoint artifacts"
    requirement = "mlflow"

    def start(self, run_dir: Path, config: dict[str, Any], step: int, kept: dict[str, Any]) -> TrackerRun:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = kept.get("tracking_uri") or _default_uri()
        if uri and uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this flag
        client = MlflowClient(tracking_uri=uri)
        if kept.get("run_id"):
            client.update_run(kept["run_id"], status="RUNNING")
            return MLflowRun(client, kept["run_id"])
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "harness")
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        run = client.create_run(experiment_id, run_name=run_dir.name, tags={"harness.run_dir": str(run_dir)})
        params = [
            Param(key, str(value)[:PARAM_VALUE_LIMIT]) for key, value in config.items() if not isinstance(value, dict)
        ]
        client.log_batch(run.info.run_id, params=params)
        return MLflowRun(client, run.info.run_id)


def _default_uri() -> str | None:
    """``MLFLOW_TRACKING_URI``, else MLflow's database default if it can open one, else ``./mlruns``."""
    import importlib.util

    if os.environ.get("MLFLOW_TRACKING_URI") or importlib.util.find_spec("sqlalchemy"):
        return None
    return f"file:{Path.cwd() / 'mlruns'}"


def _metric_name(name: str) -> str:
    """MLflow allows alphanumerics, ``_ - . : /`` and spaces in a name: ``anil (3 inner steps)`` -> ``anil _3 inner steps_``."""
    return re.sub(r"[^\w\-.: /]", "_", name)


def _milliseconds() -> int:
    import time

    return int(time.time() * 1000)


@harness.hookimpl
def register_trackers(registry):
    registry.add(MLflowTracker())
