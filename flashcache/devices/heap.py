"""Keeping freed heap for the next batch of results.

A batched read returns many medium objects (one ``bytes`` per request, 4 KiB and up: too
big for Python's small-object allocator, so each is a glibc ``malloc``). When the caller
drops them, glibc sees megabytes free at the top of the heap and, past its trim threshold
(128 KiB by default), hands them back to the kernel; the next batch faults every page in
again. On a VM that was a third of a QD32 O_DIRECT batch's time (tools/bench_io.py).

glibc raises both thresholds on its own once a large allocation served by mmap is freed
(mallopt(3), "dynamic mmap threshold": the mmap threshold becomes that block's size and the
trim threshold twice it, up to 32 MiB on 64-bit). ``keep_freed`` frees one such block of
the size a device's batches reach, once per process and size, so glibc keeps that much
freed heap for reuse instead of trimming it. It never lowers a threshold, and it does
nothing if the process set one explicitly (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_`` or mallopt): glibc stops adjusting then, and the owner's choice
stands.
"""
from __future__ import annotations

import os
import threading

_GLIBC_MAX = 32 << 20           # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_lock = threading.Lock()
_primed = 0


def keep_freed(nbytes: int) -> int:
    """Have glibc keep about ``2 * nbytes`` of freed heap (nbytes capped at 32 MiB).
    Returns the block size this process has primed so far (0 if the thresholds are the
    owner's, or the platform is not glibc)."""
    global _primed
    if nbytes <= _primed or not _dynamic():
        return _primed
    with _lock:
        n = min(nbytes, _GLIBC_MAX)
        if n > _primed:
            block = bytes(n)     # calloc: a fresh mmap, never touched, so cheap
            del block            # freed: glibc adopts its size as the new thresholds
            _primed = n
    return _primed


def _dynamic() -> bool:
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (ValueError, OSError):
        return False
    return not any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                                             "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"))
