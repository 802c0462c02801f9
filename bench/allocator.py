"""The host allocator: keep freed memory in the process instead of handing it back every step.

glibc's malloc serves each block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it when it is freed, and trims the heap's free top back to the system. A CPU training step
frees and allocates its large activation tensors (crnn-gru at batch 8: 92 MB each) every step, so
every step page-faults them in again: on this project's 2-core machine the kernel's share of a
training process was about 45% (300,000 minor faults a second). With no mmap and no trimming the
heap keeps what it had, at the cost of holding the run's peak memory until it ends.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only a free top over 2 GiB
# the same settings for child processes (workers), which read them at their start
CHILD_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc to keep freed memory (no mmap per large block, no heap trimming) for this
    process and the ones it starts; returns whether it did. ``BENCH_MALLOC=system`` leaves the
    allocator as it is; other platforms and C libraries are left alone."""
    if os.environ.get("BENCH_MALLOC", "keep") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return False
    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    return True


def malloc_mode() -> str:
    """``keep`` where glibc keeps freed memory in this process (:func:`keep_freed_memory`, or the
    same ``MALLOC_*`` variables set by hand), else ``system``: recorded next to speed figures."""
    return "keep" if os.environ.get("MALLOC_MMAP_MAX_") == "0" else "system"
