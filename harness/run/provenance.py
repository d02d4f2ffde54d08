"""Where an evaluation came from: evaluator, options, tasks, and the checkpoint's step and sha256.

Every ``eval-*.json`` / ``analysis-*.json`` carries a ``provenance`` record. Its file name holds the
options given on the command line (``eval-nil-num_tasks=20.json``), so evaluations with other options
sit beside each other; an earlier file of the same name that came from another checkpoint (``best.pt``
replaced by later training) or that records no provenance is kept under a name of its own, never
overwritten. ``harness reproduce`` reuses an evaluation only when its provenance matches the run's
current checkpoint and the definition's options.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from harness.run.files import load_torch, read_json

_HASHED: dict[tuple[Path, int, int], str] = {}  # (file, size, mtime_ns) -> sha256: a checkpoint is hashed once


def file_sha256(path: Path) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def checkpoint_record(path: Path) -> dict[str, Any]:
    """``{"file", "step", "sha256"}`` of the checkpoint an evaluation used."""
    return {"file": Path(path).name, "step": load_torch(path, needs=("step",))["step"], "sha256": file_sha256(path)}


def option_text(value: Any) -> str:
    """An option's value as it appears in a file name and a provenance record (a run by its directory name)."""
    path = getattr(value, "path", None)
    if path is not None:
        return Path(path).name
    text = str(value).lstrip("@")
    return Path(text).name if "/" in text else text


def given_suffix(given: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``-key=value`` for every option given (sorted), e.g. ``-num_tasks=20``; none given: ``""``."""
    return "".join(f"-{k}={option_text(v)}" for k, v in sorted(given.items()) if v is not None and k not in skip)


def evaluation_provenance(evaluator: str, given: dict, options: dict, checkpoint: Path) -> dict[str, Any]:
    import harness

    return {
        "evaluator": evaluator,
        "given": {k: option_text(v) for k, v in sorted(given.items()) if v is not None},
        "options": {k: option_text(v) if not isinstance(v, int | float | bool) else v for k, v in options.items()},
        "checkpoint": checkpoint_record(checkpoint),
        "harness": harness.__version__,
    }


def same_source(recorded: dict | None, provenance: dict) -> bool:
    """Whether an evaluation recorded ``recorded`` came from the same checkpoint, evaluator and given options."""
    if not recorded:
        return False
    keys = ("evaluator", "given")
    return recorded.get("checkpoint", {}).get("sha256") == provenance["checkpoint"]["sha256"] and all(
        recorded.get(k) == provenance[k] for k in keys
    )


def keep_earlier(out: Path, provenance: dict) -> None:
    """Move an earlier ``out`` of another source aside (``STEM@SHA8.json``, ``STEM@unrecorded.json``)."""
    if not out.exists():
        return
    recorded = read_json(out).get("provenance")
    if same_source(recorded, provenance):
        return  # the same evaluation again: on the same machine it gives the same numbers
    tag = recorded["checkpoint"]["sha256"][:8] if recorded else "unrecorded"
    kept = out.with_name(f"{out.stem}@{tag}.json")
    out.replace(kept)
    why = f"checkpoint step {recorded['checkpoint']['step']}" if recorded else "no recorded provenance"
    print(f"harness: kept the earlier {out.name} ({why}) as {kept.name}", file=sys.stderr)
