"""Where datasets live and where decoded caches go.

Data root, first that is set: ``--data-root``, ``$HARNESS_DATA_ROOT``,
``$XDG_CACHE_HOME/feature-reuse-harness/data`` (``~/.cache/...``). Each
dataset has its own folder under the root (``omniglot/``, ``miniimagenet/``).

Decoded-image caches go to ``$HARNESS_CACHE_DIR`` or
``$XDG_CACHE_HOME/feature-reuse-harness/decoded``; they are keyed by a
fingerprint of the source files and rebuilt when the source changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

APP = "feature-reuse-harness"


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def resolve_data_root(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("HARNESS_DATA_ROOT"):
        return Path(os.environ["HARNESS_DATA_ROOT"]).expanduser()
    return _xdg_cache() / APP / "data"


def cache_dir() -> Path:
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"]).expanduser()
    return _xdg_cache() / APP / "decoded"


def fingerprint(files: list[Path], extra: str = "") -> str:
    """Hash of paths, sizes and modification times (cheap; no file contents)."""
    digest = hashlib.sha256(extra.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_or_build_array(name: str, key: str, build) -> np.ndarray:
    """``build()`` once per fingerprint ``key``; later calls memory-map the ``.npy``."""
    path = cache_dir() / f"{name}-{key}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
    array = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; an unwritable cache dir must not stop a run
    return array
