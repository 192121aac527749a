"""Crash test: a write-heavy workload in a child process, SIGKILLed at random points, 50
times over on the same device file; after each kill the router reopens with no exception
and every value it returns is one that was set for that key: the latest acknowledged one,
or the one in flight when the process died."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from engines.device import run
from flashcache.devices.file import FileDevice
from tests.engines.crash_child import MIB, open_navy

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 50


def parse(logpath: Path):
    """Per key: the ops in order as (seq, kind, acked)."""
    ops: dict[bytes, list[list]] = {}
    by_seq: dict[int, list] = {}
    last_seq = 0
    for line in logpath.read_bytes().splitlines():
        parts = line.split()
        if not parts or parts[0] == b"S":
            continue
        if parts[0] == b"B" and len(parts) >= 4:
            seq, kind, key = int(parts[1]), parts[2].decode(), parts[3]
            rec = [seq, kind, False]
            ops.setdefault(key, []).append(rec)
            by_seq[seq] = rec
            last_seq = max(last_seq, seq)
        elif parts[0] == b"A" and len(parts) == 2 and int(parts[1]) in by_seq:
            by_seq[int(parts[1])][2] = True
    return ops, last_seq


def allowed(recs: list[list]) -> set[int]:
    """Seqs whose value may be returned: the last acknowledged op if it is a set, and any
    op after it (in flight when the child died)."""
    last = max((i for i, r in enumerate(recs) if r[2]), default=-1)
    ok = {r[0] for r in recs[last + 1:] if r[1] == "S"}
    if last >= 0 and recs[last][1] == "S":
        ok.add(recs[last][0])
    return ok


def test_sigkill_at_random_points_never_returns_a_wrong_value(tmp_path):
    rnd = random.Random(1234)
    img, logp = tmp_path / "crash.img", tmp_path / "ops.log"
    seq = 0
    starts = []
    for kill in range(KILLS):
        child = subprocess.Popen([sys.executable, str(CHILD), str(img), str(logp), str(seq), str(kill)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while (not logp.exists() or logp.read_bytes().count(b"\nS ") + logp.read_bytes().startswith(b"S ")
               < kill + 1):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
        ops, seq = parse(logp)
        dev = FileDevice(str(img), 16 * MIB)
        try:
            nv = open_navy(dev)                           # zero exceptions on reopen
            starts.append(nv.start)
            assert nv.start.startswith(("cold", "formatted: new device")), nv.start
            for key, recs in ops.items():
                got = run(nv.lookup(key), dev)
                if got is None:
                    continue
                head, s, _ = got.split(b"|", 2)
                assert head == key, (key, got[:40])
                assert int(s) in allowed(recs), (key, int(s), recs[-3:])
        finally:
            dev.close()
    assert seq > KILLS * 20, "the workload hardly ran"
    assert sum(s.startswith("cold") for s in starts) >= KILLS - 1
