"""Fork safety: in a child made by fork(), the devices, io_uring rings and caches it
inherited refuse use (ForkedError) instead of sharing the parent's.

Owns the registry of such live objects (weak: it keeps none alive) and the one at-fork
hook that tells each of them, in the child, before the child runs anything else. Each
object's ``_inherited()`` only sets flags and lets go of descriptors: no I/O, no lock
(a parent thread may have held any lock at the fork, and it does not exist in the child to
release it). The surprise: the child must not close what it inherited the normal way:
the device's flock, a ring and its shared mappings are the parent's too.
"""
from __future__ import annotations

import logging
import os
import weakref

log = logging.getLogger("flashcache.forksafe")

_live: "weakref.WeakSet[object]" = weakref.WeakSet()


def track(obj: object) -> int:
    """Have ``obj._inherited()`` called in any child forked while ``obj`` lives; returns
    this process's PID (the owner, for the child's error message)."""
    _live.add(obj)
    return os.getpid()


def _after_fork_in_child() -> None:
    for obj in list(_live):
        try:
            obj._inherited()
        except Exception:                 # noqa: BLE001 - a hook that raises cannot stop the fork
            log.exception("flashcache: marking an inherited %s unusable after fork() failed",
                          type(obj).__name__)


os.register_at_fork(after_in_child=_after_fork_in_child)
