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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

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
    """Where decoded images are cached; ``HARNESS_CACHE_DIR`` naming something that is no directory is refused."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        path = Path(os.environ["HARNESS_CACHE_DIR"]).expanduser()
        if path.exists() and not path.is_dir():
            raise HarnessError(
                f"HARNESS_CACHE_DIR={os.environ['HARNESS_CACHE_DIR']} is not a directory; point it at a "
                f"directory (created if missing) or unset it"
            )
        return path
    return _xdg_cache() / APP / "decoded"


def fingerprint(files: list[Path], extra: str = "") -> str:
    """Hash of paths, sizes and modification times (cheap; no file contents)."""
    digest = hashlib.sha256(extra.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _damage(path: Path, checksum: Path) -> str | None:
    """Why the cache file ``path`` cannot be trusted, or None when its contents match the checksum written with it."""
    if not checksum.exists():
        return "no checksum beside it (written by an older version, or the writer was killed)"
    try:
        expected = checksum.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return "its checksum file is unreadable"
    try:
        if _digest(path) != expected:
            return "its contents do not match the checksum written with it"
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    return None


def load_or_build_array(name: str, key: str, build) -> np.ndarray:
    """``build(allocate)`` once per fingerprint ``key``; later calls memory-map the ``.npy``.

    ``allocate(shape, dtype)`` gives ``build`` its output array: a ``.npy`` memory map in the cache
    directory, so a split larger than RAM is decoded straight to disk (``decode_all`` takes it);
    an array ``build`` makes itself is saved instead. Each cache file has a SHA-256 of its contents
    beside it (``.npy.sha256``), checked on every open: a damaged, truncated or half-written cache
    (disk error, a killed writer, a copy gone wrong) is decoded again with a one-line notice, never
    trained on. Processes sharing the cache (``reproduce --workers``, parallel tests) decode a key once:
    the first holds a lock file beside it, the others wait and then read what it wrote.
    """
    path = cache_dir() / f"{name}-{key}.npy"
    cached = _trusted(path)
    if cached is not None:
        return cached
    with _exclusive(path):
        cached = _trusted(path)  # another process may have written it while this one waited
        if cached is not None:
            return cached
        return _build_and_save(path, build)


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _trusted(path: Path) -> np.ndarray | None:
    """The cache file ``path`` memory-mapped, or None when it is absent or damaged (then removed, with a notice)."""
    if not path.exists():
        return None
    checksum = _checksum_file(path)
    reason = _damage(path, checksum)
    if reason is None:
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            reason = f"numpy cannot read it ({exc})"
    print(f"harness: decoded-image cache {path} cannot be trusted ({reason}); decoding again", file=sys.stderr)
    path.unlink(missing_ok=True)
    checksum.unlink(missing_ok=True)
    return None


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold the lock file beside ``path`` (``fcntl.flock``: released by the kernel when its holder dies). Without
    ``fcntl`` (Windows) or a writable cache directory, no lock: each process then decodes on its own."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(f".{path.name}.lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"harness: waiting for another process decoding into {path}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build_and_save(path: Path, build) -> np.ndarray:
    """``build(allocate)`` into a temporary memory map, then its checksum and the file itself put in place, in that
    order: a reader that finds ``path`` finds its checksum beside it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def allocate(shape: tuple[int, ...], dtype) -> np.ndarray:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        except OSError:
            return np.empty(shape, dtype)  # caching is an optimisation: an unwritable cache dir decodes in memory

    try:
        array = build(allocate)
    except BaseException:  # Ctrl-C or a bad image halfway: no half-written cache left behind
        tmp.unlink(missing_ok=True)
        raise
    try:
        if isinstance(array, np.memmap) and array.filename is not None and Path(array.filename) == tmp.resolve():
            array.flush()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        checksum = _checksum_file(path)
        tmp_checksum = checksum.with_name(f".{checksum.name}.{os.getpid()}.tmp")
        tmp_checksum.write_text(f"{_digest(tmp)}  {path.name}\n")  # the sha256sum format: `sha256sum -c` checks it too
        os.replace(tmp_checksum, checksum)
        os.replace(tmp, path)
    except OSError:
        return array  # caching is an optimisation; an unwritable cache dir must not stop a run
    del array  # from now on the memory map: a pool larger than RAM is read image by image
    return np.load(path, mmap_mode="r")


def decode_all(files: list[Path], decode, what: str, allocate=None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``[decode(f) for f in files]`` as one array, with a progress bar: what is decoded, how far, how long is left.

    ``allocate(shape, dtype)`` (``load_or_build_array``'s) makes the output, shaped ``shape`` (default
    ``[files, *image]``; any shape with as many elements, e.g. ``[classes, images per class, H, W]``):
    with a memory map only one image is in memory at a time.
    """
    from tqdm import tqdm

    print(
        f"harness: decoding {len(files)} {what} images (once: later runs read the cache in {cache_dir()})",
        file=sys.stderr,
    )
    first = decode(files[0])
    pixels = (allocate or np.empty)(shape or (len(files), *first.shape), first.dtype)
    flat = pixels.reshape(len(files), *first.shape)  # a view of the same memory, image by image
    flat[0] = first
    progress = tqdm(files[1:], desc=f"decoding {what}", unit="img", file=sys.stderr, mininterval=1.0, disable=None)
    for index, path in enumerate(progress, start=1):
        flat[index] = decode(path)
    return pixels
