"""Checks the device tests share."""
import gc
import weakref

import pytest

from flashcache.errors import ClosedError


def close_refusing_reads(d) -> weakref.ref:
    """Close ``d`` and check that a later read is refused; returns a weak reference for
    ``collected`` once the caller has dropped its own."""
    d.close()
    with pytest.raises(ClosedError):
        d.read(0, 4096)
    return weakref.ref(d)


def collected(ref: weakref.ref) -> bool:
    """Whether the object is gone after a collection (a device's C reader has the device's
    own method as its fallback: a cycle the GC must break)."""
    gc.collect()
    return ref() is None
