"""``--report-to wandb``: one Weights & Biases run per harness run (``WANDB_MODE=offline`` works unchanged).

The project is ``WANDB_PROJECT`` (default ``feature-reuse-harness``), the run name the run directory's,
and W&B's files go into the run directory (``RUN_DIR/wandb``) unless ``WANDB_DIR`` says otherwise. The
config is the W&B config; metrics rows are logged at their steps; the test results go into the run's
summary; the tested checkpoint is a ``model`` artifact, ``config.json`` and ``summary.json`` a
``results`` artifact, and evaluator figures are logged as images. A resumed run continues the W&B run
of the same id (``resume="allow"``); the rows it recomputes past its checkpoint carry the values they had.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import harness
from harness.run.trackers import Tracker, TrackerRun


class WandbRun(TrackerRun):
    def __init__(self, run):
        self.run = run

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def finish(self, summary: dict[str, Any], scalars: dict[str, float], artifacts: list[Path]) -> None:
        import wandb

        self.run.summary.update(scalars)
        figures = {f"figures/{path.stem}": wandb.Image(str(path)) for path in artifacts if path.suffix == ".png"}
        if figures:
            self.run.log(figures)
        model = wandb.Artifact(f"{self.run.name}-model", type="model")
        results = wandb.Artifact(f"{self.run.name}-results", type="results")
        for path in artifacts:
            if path.suffix == ".pt":
                model.add_file(str(path))
            elif path.suffix == ".json":
                results.add_file(str(path))
        for artifact in (model, results):
            if artifact.manifest.entries:
                self.run.log_artifact(artifact)
        self.run.finish()

    def close(self) -> None:
        self.run.finish(exit_code=1)  # stopped unfinished; --resume continues this W&B run

    def report_evaluation(self, step: int, scalars: dict[str, float], files: list[Path]) -> None:
        import wandb

        self.run.summary.update(scalars)
        figures = {f"figures/{path.stem}": wandb.Image(str(path)) for path in files if path.suffix == ".png"}
        if figures:
            self.run.log(figures)
        self.run.finish()

    def state(self) -> dict[str, Any]:
        return {"id": self.run.id, "project": self.run.project}


class WandbTracker(Tracker):
    name = "wandb"
    description = "a Weights & Biases run (WANDB_PROJECT, WANDB_MODE=offline works): metrics, summary, artifacts"
    requirement = "wandb"

    def start(self, run_dir: Path, config: dict[str, Any], step: int, kept: dict[str, Any]) -> TrackerRun:
        import wandb

        run = wandb.init(
            project=kept.get("project") or os.environ.get("WANDB_PROJECT", "feature-reuse-harness"),
            name=run_dir.name,
            id=kept.get("id"),
            resume="allow" if kept.get("id") else None,
            dir=os.environ.get("WANDB_DIR", str(run_dir)),
            config=config,
            settings=wandb.Settings(console="off", silent=True),
        )
        return WandbRun(run)


@harness.hookimpl
def register_trackers(registry):
    registry.add(WandbTracker())
