"""Freed memory stays with the process for reuse (glibc malloc), instead of going back to the OS.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free. A
MiniImageNet step at the paper's settings (320 images of 84x84 through Conv4) allocates dozens
of such tensors per iteration (one 32x84x84 feature map of 320 images is 289 MB), so every
iteration pays the kernel for zeroing and faulting in each page again: one ReLU over that map
took 80 ms, three times what its arithmetic and memory traffic need. With ``mmap`` off
(``M_MMAP_MAX = 0``) and freed memory never trimmed below 2 GiB (``M_TRIM_THRESHOLD``), the
same pages are reused from the heap. Measured (``results/benchmarks/NOTES.md``, "Allocator"):
ANIL MiniImageNet 5w1s training at the paper's settings 1.46 -> 0.61 s per step, MAML 2.84 ->
1.99 s; Omniglot steps (no tensor above 32 MiB) unchanged. The cost: the process keeps its
peak memory until it exits.

Applied by the ``harness`` command line and the speed suite; a library user calls
:func:`keep_freed_memory` at startup. ``HARNESS_MALLOC=default`` leaves malloc alone. On a
system without glibc it does nothing. (jemalloc or tcmalloc preloaded with ``LD_PRELOAD``,
which PyTorch's CPU tuning guide suggests, have the same effect but are not installable from
PyPI into a virtual environment.)
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int
_switched = False  # mirrors the process-wide malloc state that keep_freed_memory sets


def keep_freed_memory() -> bool:
    """Switch glibc malloc to keep and reuse large freed blocks; whether it was switched."""
    global _switched
    if os.environ.get("HARNESS_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    _switched = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _switched


def malloc_setting() -> str:
    """What malloc does in this process, for every library in it (timings say which they ran with)."""
    if _switched:
        return "glibc malloc keeps freed blocks (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB: harness.run.allocator)"
    return "the C library's default malloc"
