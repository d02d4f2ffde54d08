"""Experiment trackers (``--report-to tensorboard,mlflow,wandb``): what a tracker plugin implements, and
the trackers of one run with every failure contained.

A tracker is registered by ``register_trackers`` (``harness.plugin.hookspecs``) as a :class:`Tracker`;
``start`` returns a :class:`TrackerRun` for one run. The core calls it from the run's lifecycle
(``harness.run.lifecycle``), image and meta-RL runs alike:

- ``start``: the resolved config (``config.json``), the step the run starts from (0, or the checkpoint
  it resumes), and what this tracker kept from the run's earlier starts (its run id), so that a
  resumed run continues the same tracker run;
- ``log_scalars``: every ``metrics.jsonl`` row as scalars named ``<split>/<key>`` at its step;
- ``finish``: the test results and ``summary.json`` as scalars, and the files worth keeping
  (``config.json``, ``summary.json``, the tested checkpoint, evaluator figures) as artifacts;
- ``close``: the run stopped before finishing (time limit, signal, error); it may be resumed.

A tracker that raises (its library missing, a directory it cannot write, no network) costs one
line on stderr and is left out for the rest of the run: training never waits on it or changes for it.
What the trackers keep between starts is ``RUN_DIR/trackers.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.files import read_json, write_json

#: Where a run keeps which trackers it reports to, and what each needs to continue its tracker run.
STATE_FILE = "trackers.json"


class TrackerRun:
    """One run as a tracker sees it; every method is optional (the defaults do nothing)."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars of one metrics row, named ``<split>/<key>`` (``train/loss``, ``val/accuracy``, ...)."""

    def finish(self, summary: dict[str, Any], scalars: dict[str, float], artifacts: list[Path]) -> None:
        """The run ended and was tested: ``summary`` is ``summary.json``, ``scalars`` its numbers named
        ``test/accuracy``, ``test/ci95``, ...; ``artifacts`` the files to keep, each existing."""

    def close(self) -> None:
        """The run stopped unfinished (it may be resumed with ``--resume``): flush and let go."""

    def report_evaluation(self, step: int, scalars: dict[str, float], files: list[Path]) -> None:
        """``harness eval`` / ``analyze`` on the finished run: the evaluation's rows as scalars named
        ``eval/<evaluator>/<task spec>/<row>`` at the run's last step and its files (JSON, figure); then let go."""
        self.log_scalars(step, scalars)
        self.close()

    def state(self) -> dict[str, Any]:
        """What a resumed start needs to continue this tracker run (JSON), e.g. ``{"run_id": ...}``."""
        return {}


class Tracker:
    """A kind of tracker, registered once; ``start`` opens a :class:`TrackerRun` per run.

    ``requirement`` is the pip extra that installs its library (``feature-reuse-harness[<extra>]``),
    named in the one line printed when the library is missing.
    """

    name: str = ""
    description: str = ""
    requirement: str = ""

    def start(self, run_dir: Path, config: dict[str, Any], step: int, kept: dict[str, Any]) -> TrackerRun:
        """Start (``step`` 0, ``kept`` empty) or continue (``step``: the checkpoint resumed, ``kept``: what
        ``TrackerRun.state`` returned last time) the tracker run of ``run_dir``. Rows after ``step`` that
        an earlier start logged are logged again with the same values (the run recomputes them exactly)."""
        raise NotImplementedError


def parse_report_to(value: str | None, registry) -> list[str] | None:
    """``--report-to`` as tracker names: ``None`` when not given, ``[]`` for ``none``; unknown names refused."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return []
    known = sorted(registry.names())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise HarnessError(
            f"--report-to {value!r}: unknown tracker {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"trackers: {', '.join(known) or '(none registered)'}, or none"
        )
    return list(dict.fromkeys(names))


def scalars_of(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """The numbers (and flags, as 0 / 1) of a metrics row or summary, named ``<prefix>/<key>`` (nested keys
    joined by ``/``)."""
    scalars: dict[str, float] = {}
    for key, value in row.items():
        if key in ("step", "split"):
            continue
        if isinstance(value, dict):
            scalars.update(scalars_of(value, f"{prefix}/{key}"))
        elif isinstance(value, int | float):  # bools too (TRPO's "accepted"), as 0 / 1
            scalars[f"{prefix}/{key}"] = float(value)
    return scalars


class RunTrackers:
    """The trackers one run reports to; each call goes to each, and one that raises is dropped with one line."""

    def __init__(self, registry, run_dir: Path, report_to: list[str] | None):
        self.run_dir = run_dir
        kept = read_json(run_dir / STATE_FILE) if (run_dir / STATE_FILE).exists() else {}
        self.names = kept.get("report_to", []) if report_to is None else report_to  # a resume keeps them
        self.kept = kept
        self.registry = registry
        self.runs: dict[str, TrackerRun] = {}

    def start(self, config: dict[str, Any], step: int) -> None:
        for name in self.names:
            start = self.registry.get(name).start
            opened = self._contained(name, "start", start, self.run_dir, config, step, self._kept(name))
            if opened is not None:
                self.runs[name] = opened
        self._save()

    def log(self, row: dict[str, Any]) -> None:
        scalars = scalars_of(row, row.get("split", "train"))
        for name, run in list(self.runs.items()):
            self._contained(name, "log_scalars", run.log_scalars, row["step"], scalars)

    def finish(self, summary: dict[str, Any]) -> None:
        scalars = scalars_of(summary.get("test", {}), "test")
        artifacts = self._artifacts(summary)
        for name, run in list(self.runs.items()):
            self._contained(name, "finish", run.finish, summary, scalars, artifacts)
        self._save()
        self.runs.clear()

    def report_evaluation(self, config: dict[str, Any], step: int, result: dict[str, Any], files: list[Path]) -> None:
        """An evaluation of the finished run, to the trackers it reported to (each reopened at ``step``)."""
        if not self.names:
            return
        self.start(config, step)
        prefix = f"eval/{result['evaluator']}/{result.get('provenance', {}).get('data', config.get('data', ''))}"
        scalars = {f"{prefix}/{row['name']}": float(row["mean"]) for row in result["rows"]}
        scalars.update({f"{prefix}/{row['name']} ci95": float(row["ci95"]) for row in result["rows"]})
        for name, run in list(self.runs.items()):
            self._contained(name, "report_evaluation", run.report_evaluation, step, scalars, files)
        self.runs.clear()

    def close(self) -> None:
        self._save()
        for name, run in list(self.runs.items()):
            self._contained(name, "close", run.close)
        self.runs.clear()

    def _kept(self, name: str) -> dict[str, Any]:
        return dict(self.kept.get("runs", {}).get(name, {}))

    def _artifacts(self, summary: dict[str, Any]) -> list[Path]:
        tested = summary.get("tested_checkpoint", {}).get("file")
        names = ["config.json", "summary.json", *([tested] if tested else [])]
        files = [self.run_dir / name for name in names] + sorted(self.run_dir.glob("analysis-*.png"))
        return [path for path in files if path.is_file()]

    def _save(self) -> None:
        if not self.names and not self.kept:
            return
        runs = self.kept.get("runs", {})
        for name, run in self.runs.items():
            state = self._contained(name, "state", run.state)
            if state is not None:
                runs[name] = state
        self.kept = {"report_to": self.names, "runs": runs}
        write_json(self.run_dir / STATE_FILE, self.kept)

    def _contained(self, name: str, what: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # a tracker's failure must never stop or change training
            tracker = self.registry.get(name)
            hint = ""
            if isinstance(exc, ImportError) and tracker.requirement:
                hint = f"; pip install 'feature-reuse-harness[{tracker.requirement}]'"
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"harness: warning: tracker {name!r} failed ({what}: {type(exc).__name__}: {message}{hint}); "
                f"the run goes on without it",
                file=sys.stderr,
            )
            self.runs.pop(name, None)
            return None
