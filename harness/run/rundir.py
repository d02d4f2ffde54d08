"""Run directories: atomic files, checkpoints, and loading a finished run.

Layout of one run::

    RUN_DIR/config.json        resolved RunConfig
    RUN_DIR/metrics.jsonl      one JSON row per logged step (train and val)
    RUN_DIR/checkpoint.pt      latest state: model, optimiser, step, RNG states, config
    RUN_DIR/best.pt            model with the best validation accuracy so far
    RUN_DIR/checkpoints/       periodic checkpoints (--checkpoint-every)
    RUN_DIR/summary.json       test accuracy, CI, wall time, device, versions
    RUN_DIR/eval-<name>.json   evaluator outputs (harness eval)

Every file is written to a temporary name in the same directory and renamed
into place, so a killed process never leaves a half-written file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class DiskFullError(HarnessError):
    """A write failed for want of space; whatever was written before is intact."""


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _write_error(exc: OSError, path: Path) -> HarnessError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on {_mount_point(path.parent)} writing {path}")
    if exc.errno == errno.EROFS:
        return HarnessError(f"cannot write {path}: {path.parent} is on a read-only file system")
    return HarnessError(f"cannot write {path}: {exc.strerror or exc}")


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file and a rename: readers see the old or the new file, whole."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; run files are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise _write_error(exc, path) from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def copy_file(source: Path, target: Path) -> None:
    """``source``'s bytes into ``target``, atomically (a checkpoint copied as it is)."""
    _atomic_write(Path(target), Path(source).read_bytes())


def write_json(path: Path, value: Any) -> None:
    _atomic_write(Path(path), (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not valid JSON: {exc}") from None


def save_torch(path: Path, value: Any) -> None:
    # Serialised in memory first: torch.save on a full disk fails with an opaque RuntimeError from its
    # zip writer, a plain write with OSError(ENOSPC), which becomes a one-line error.
    buffer = io.BytesIO()
    torch.save(value, buffer)
    _atomic_write(Path(path), buffer.getvalue())


def _numpy_array_globals() -> list:
    """What unpickling a numpy array needs (the numpy RNG state in ``checkpoint.pt``), and nothing else."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.uint32))]


def load_torch(path: Path, needs: tuple[str, ...] = ()) -> Any:
    """A checkpoint, loaded without running code: ``weights_only`` unpickling (tensors, containers, numbers,
    strings) plus numpy arrays. Checkpoints are shared between people (the project releases its own
    meta-initialisations), and a pickle may run any code when loaded; one that needs more is refused.

    ``needs``: the entries the caller reads; a file without them (a plain state dict, another
    program's checkpoint) is refused with one line naming what is missing.
    """
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HarnessError(f"{path} does not exist") from None
    except pickle.UnpicklingError as exc:
        found = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        what = found[0].rstrip(".") if found else "an object that is not a tensor, number or string"
        raise HarnessError(
            f"refusing to load {path}: it would run code when loaded ({what}); "
            f"a harness checkpoint holds only tensors, numbers and strings"
        ) from None
    except Exception as exc:
        raise HarnessError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_one_line(exc)}") from None
    if needs:
        missing = [key for key in needs if not isinstance(state, dict) or key not in state]
        if missing:
            what = "a dict" if isinstance(state, dict) else f"a {type(state).__name__}"
            hint = (
                " (a bare state dict?)"
                if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
                else ""
            )
            raise HarnessError(
                f"{path} is not a harness checkpoint{hint}: {what} without {', '.join(map(repr, missing))}; "
                f"harness checkpoints (best.pt, checkpoint.pt) hold {', '.join(needs)}"
            )
    return state


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()).replace(":; ", ": ")
    return text if len(text) <= limit else text[:limit] + " ..."


def load_weights(module: torch.nn.Module | torch.optim.Optimizer, weights: dict, path: Path) -> None:
    """``module.load_state_dict(weights)``, with a one-line error when the checkpoint is for another network."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise HarnessError(f"{path} does not fit this network: {_one_line(exc)}") from None


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a damaged line is a one-line error naming it (the file is left as it is)."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HarnessError(
                f"{path}:{number} is not a JSON row ({exc.msg}); the file was changed outside harness: "
                f"repair or delete that line"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise HarnessError(f"{path}:{number} is not a metrics row (a JSON object with an integer 'step')")
        rows.append(row)
    return rows


class MetricsLog:
    """``metrics.jsonl``; rewritten atomically on every append (it stays small)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = read_metrics(self.path) if self.path.exists() else []

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (they are recomputed on resume)."""
        self.rows = [row for row in self.rows if row["step"] <= step]
        self._flush()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self._flush()

    def _flush(self) -> None:
        _atomic_write(self.path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in self.rows).encode())


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
    """``"finished"`` / ``"started (step N)"`` for a run directory that holds a run, None for one that does not."""
    path = Path(path)
    if (path / "summary.json").exists():
        return "finished"
    if (path / "checkpoint.pt").exists():
        try:
            return f"started (step {load_torch(path / 'checkpoint.pt')['step']})"
        except HarnessError:
            return "started"
    return None
