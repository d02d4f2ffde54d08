"""Run directories: their layout, creation and lock, and what state a run left them in.

Layout of one run::

    RUN_DIR/config.json        resolved RunConfig
    RUN_DIR/metrics.jsonl      one JSON row per logged step (train and val)
    RUN_DIR/checkpoint.pt      latest state: model, optimiser, step, RNG states, config
    RUN_DIR/best.pt            model with the best validation accuracy so far
    RUN_DIR/checkpoints/       periodic checkpoints (--checkpoint-every)
    RUN_DIR/summary.json       test accuracy, CI, wall time, device, versions
    RUN_DIR/eval-<name>.json   evaluator outputs (harness eval)

Their files are written atomically (``harness.run.files``).
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.files import load_torch, read_json

#: Open lock files of the run directories this process trains in (released when the process exits).
_LOCKS: dict[Path, Any] = {}


def lock_holder() -> str:
    """Who holds a lock, as its refusal names them: ``pid 123: harness run --out ...``."""
    import shlex

    return f"pid {os.getpid()}: {shlex.join(['harness', *sys.argv[1:]])}"


def held_by(path: Path) -> str | None:
    """Who holds ``path``'s lock (as :func:`lock_holder` wrote it), or None when no other process does."""
    import fcntl

    lock_file = Path(path) / ".lock"
    if Path(path).resolve() in _LOCKS or not lock_file.exists():
        return None
    with open(lock_file) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return handle.read().strip() or "?"
    return None


def prepare_run_dir(path: Path, lock: bool = False, busy: str = "wait for it to end or choose another --out") -> Path:
    """Create ``path`` and check it is writable; with ``lock``, hold ``path/.lock`` for this process.

    The lock is an OS-level ``flock``: the kernel releases it when the process ends, however it
    ends, so a lock file left behind by a killed run never blocks the next one; a second process
    that tries to train in the same directory at the same time is refused with one line.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"  # per process: torchrun ranks probe one directory
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HarnessError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    if lock and path.resolve() not in _LOCKS:
        import fcntl

        handle = open(path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise HarnessError(f"{path} is in use by another harness process ({holder}); {busy}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(lock_holder())
        handle.flush()
        _LOCKS[path.resolve()] = handle
        # Half-written files of a killed writer (``_atomic_write``'s temporary names): nobody else writes here now.
        for leftover in [
            *path.glob(".*.pt.*"),
            *path.glob(".*.json.*"),
            *path.glob(".*.jsonl.*"),
            *path.glob("checkpoints/.step-*.pt.*"),
        ]:
            leftover.unlink(missing_ok=True)
    return path


@contextmanager
def removed_if_start_fails(path: Path):
    """A new run directory is removed again when its start fails (bad data root, unknown backbone, ...).

    Only a directory that did not exist before is removed, and only while the run is being set
    up: once training has begun, whatever was written stays.
    """
    path = Path(path)
    created = not path.exists()
    try:
        yield
    except BaseException:
        if created and path.exists():
            lock = _LOCKS.pop(path.resolve(), None)
            if lock is not None:
                lock.close()
            shutil.rmtree(path, ignore_errors=True)
        raise


def refuse_taken(run_dir: Path) -> None:
    """A new run's ``--out`` that already holds a run is refused: it is resumed, never overwritten."""
    state = run_state(run_dir)
    if state:
        raise HarnessError(
            f"{run_dir} already holds a run ({state}); continue it with --resume {run_dir}, or choose another --out"
        )


def run_state(path: Path) -> str | None:
    """``"finished"`` / ``"started (step N of M)"`` for a run directory that holds a run, None for one that
    does not. N is the checkpoint's step, where a continued run starts again; M the run's iterations."""
    path = Path(path)
    if (path / "summary.json").exists():
        return "finished"
    if (path / "checkpoint.pt").exists():
        try:
            step = load_torch(path / "checkpoint.pt", needs=("step",))["step"]
        except HarnessError:
            return "started"
        total = recorded_iterations(path / "config.json")
        return f"started (step {step:,})" if total is None else f"started (step {step:,} of {total:,})"
    return None


def recorded_iterations(record: Path) -> int | None:
    """``iterations`` of a run's ``config.json`` (set) or ``summary.json`` (trained and tested), if readable."""
    try:
        total = read_json(record).get("iterations")
    except (HarnessError, OSError, AttributeError):
        return None
    return total if isinstance(total, int) else None
