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


def in_child(fn, timeout: float = 20.0):
    """Run ``fn()`` in a child made by os.fork() and return what it returned (pickled back
    through a pipe). A child that raises, dies or is still running after ``timeout``
    seconds fails the test (a hung child is killed), so a hang is a failure, not a stuck
    run. The child leaves through os._exit: none of pytest's teardown runs there."""
    import os
    import pickle
    import select
    import signal
    import time
    import traceback

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # the child
        code = 0
        try:
            os.close(r)
            try:
                out = pickle.dumps(("returned", fn()))
            except BaseException:                    # noqa: BLE001 - reported to the parent
                out = pickle.dumps(("raised", traceback.format_exc()))
            view = memoryview(out)
            while view:
                view = view[os.write(w, view):]
        except BaseException:                        # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child did not finish within {timeout} s (hung); killed it")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"the forked child died without an answer (wait status {status})")
    how, value = pickle.loads(b"".join(chunks))
    if how == "raised":
        pytest.fail(f"the forked child raised:\n{value}")
    return value


def outcome(call) -> str:
    """What ``call()`` did, as text a child can send back: "returned <repr>" or
    "<ExceptionType>: <message>"."""
    try:
        return f"returned {call()!r}"[:200]
    except Exception as e:                           # noqa: BLE001 - the outcome is the answer
        return f"{type(e).__name__}: {e}"


def digest(folder) -> dict[str, str]:
    """Every file's bytes in ``folder`` (a device's data and, for the emulated SSD, its FTL
    state), hashed: equal digests mean nothing was written."""
    import hashlib
    from pathlib import Path
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}
