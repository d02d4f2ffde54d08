"""Atomic files of a run directory: JSON, checkpoints, the metrics log, weights loaded with one-line errors.

Every file is written to a temporary name in the same directory and renamed into place, so a killed
process never leaves a half-written file; a full disk is one line naming the mount point.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tempfile
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
