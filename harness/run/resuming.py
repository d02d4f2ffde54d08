"""What ``harness run --resume`` continues from, and the runs it must refuse.

A resumed run continues from the newest checkpoint that loads, ``checkpoint.pt`` or a periodic
``checkpoints/step-N.pt``, and recomputes (bit for bit, docs/usage.md "Reproducibility") the metrics
rows after it. It never starts over a run whose progress would be lost: a finished run (it has
``summary.json``) is refused unless ``--iterations`` extends it from a checkpoint, and an unfinished
one whose checkpoints are all gone is refused once it had logged past its first checkpoint.
Every refusal comes before any file is touched.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.files import load_torch, read_json, read_metrics

RESUME_NEEDS = ("model", "optimizer", "step", "rng", "best", "train_seconds")
_PERIODIC = re.compile(r"step-(\d+)\.pt")


def periodic_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoints/step-N.pt``, newest first."""
    found = [
        (int(match.group(1)), path)
        for path in (run_dir / "checkpoints").glob("step-*.pt")
        if (match := _PERIODIC.fullmatch(path.name))
    ]
    return sorted(found, reverse=True)


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The loadable checkpoint with the highest step (``checkpoint.pt`` on a tie) and its contents, or None.

    One that cannot be read (damaged, or not a harness checkpoint) is passed over with one line.
    """
    candidates = [(step, 0, path) for step, path in periodic_checkpoints(run_dir)]
    latest = run_dir / "checkpoint.pt"
    loaded: dict[Path, dict] = {}
    if latest.exists():
        try:
            loaded[latest] = load_torch(latest, needs=RESUME_NEEDS)
            candidates.append((loaded[latest]["step"], 1, latest))
        except HarnessError as exc:
            print(f"harness: passing over {latest}: {exc}", file=sys.stderr)
    for _, _, path in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        if path in loaded:
            return path, loaded[path]
        try:
            return path, load_torch(path, needs=RESUME_NEEDS)
        except HarnessError as exc:
            print(f"harness: passing over {path}: {exc}", file=sys.stderr)
    return None


def refuse_unresumable(run_dir: Path, iterations: int | None, checkpoint: Path | None) -> None:
    """Raise when ``--resume`` (with ``--iterations``, if given) would redo or lose finished work."""
    summary = run_dir / "summary.json"
    if summary.exists():
        done = read_json(summary).get("iterations")
        if iterations is None or done is None or iterations <= done:
            raise HarnessError(
                f"{run_dir} is finished ({done} iterations, tested; summary.json); --resume continues an "
                f"unfinished run, or extends a finished one with --iterations above {done}"
            )
        if checkpoint is None:
            raise HarnessError(
                f"{run_dir} is finished and keeps no checkpoint to continue from (checkpoint.pt or "
                f"checkpoints/step-N.pt), so it cannot be extended; start a new run with --iterations {iterations}"
            )
        return
    metrics = run_dir / "metrics.jsonl"
    logged = {row["step"] for row in read_metrics(metrics)} if metrics.exists() else set()
    if checkpoint is None and len(logged) > 1:
        raise HarnessError(
            f"{run_dir} logged {max(logged)} iterations but keeps no checkpoint to continue from "
            f"(checkpoint.pt or checkpoints/step-N.pt); resuming would start it over and replace its "
            f"metrics.jsonl and best.pt: move them away first, or start a new run"
        )
