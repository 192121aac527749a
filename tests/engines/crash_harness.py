"""The strict crash test's machinery: a forked writer SIGKILLed at random points, and a
checker that holds every value read after a restart against the history of acknowledged
operations (tests/engines/test_crash.py for the router, tests/test_cache_crash.py for the
Cache with its DRAM tier).

The writer (a forked child) opens the cache on a file device, then runs a seeded mix of
sets (small items for BigHash, large ones for BlockCache), deletes and gets, and now and
then a clean close and reopen. Before each operation it appends "B seq kind key size" to
an op log and after it "A seq" (unbuffered: the parent knows what was acknowledged and
what was in flight); "G seq key got" records what a get returned (got: the seq of the set
whose value it was, -1 a miss), "W seq" that every set this writer acknowledged up to seq
is on the device (the BlockCache buffer is clean, or a clean close returned).

How it dies: either the parent kills it after a random delay, or the child's device
kills it at its Nth write (N random, counted from the child's open, so the recovery's
own writes, region seals, checkpoints and close() are all hit), half of those after
writing only the first half of that write (a torn write).

The checker, per key, after each restart: a value that was never set for the key is
*wrong*; a value older than the newest acknowledged operation of the key that was on the
device (a delete: always, its tombstone or bucket is written before it returns; a set:
see below), or older than what an earlier read saw (a previous restart's; the writer's
own only when every acknowledged operation is on the device), or any value a previous
read saw as deleted or lost, is a *resurrection*. (By default a set may live in DRAM
only: if it is lost, the older value on flash may come back; that is the contract.) Survival: of the keys whose
newest operation is an acknowledged set that was on the device before the kill (a
BigHash-size set through the router, any set with write_through, or a set covered by a
"W"), the share served with exactly that value.
"""
from __future__ import annotations

import os
import random
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flashcache.devices.file import FileDevice

MIB = 1 << 20
REPORT: list[str] = []
"""Each crash run's figures, printed in pytest's terminal summary (tests/conftest.py)."""


def value(key: bytes, seq: int, size: int) -> bytes:
    head = b"%s|%d|" % (key, seq)
    return head + b"#" * max(0, size - len(head))


class KillDevice(FileDevice):
    """A FileDevice that SIGKILLs its own process at its ``kill_at``-th write (0: never),
    after writing only the first half of it when ``torn``."""

    def __init__(self, path: str, size: int, kill_at: int = 0, torn: bool = False) -> None:
        super().__init__(path, size)
        self.kill_at, self.torn, self.writes = kill_at, torn, 0

    def write(self, offset, data, stream=None):
        self.writes += 1
        if self.writes == self.kill_at:
            if self.torn and len(data) >= 2 * self.block_size:
                half = len(data) // 2 // self.block_size * self.block_size
                super().write(offset, memoryview(data)[:half], stream)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().write(offset, data, stream)


@dataclass
class Target:
    """What the writer and the checker open: ``open(device)`` -> a handle with
    set/delete/get/close/on_device; ``small`` the largest key + value that goes to
    BigHash; ``durable`` whether every acknowledged operation is on the device."""

    name: str
    open: Callable[[Any], Any]
    device_size: int
    small: int
    durable: bool
    sizes: tuple[int, ...] = (40, 300, 900, 3000, 20_000, 60_000, 150_000)
    keys: int = 80
    close_rate: float = 0.005     # the share of operations that are a clean close and reopen


@dataclass
class Figures:
    kills: int = 0
    torn: int = 0
    keys_checked: int = 0
    wrong: int = 0
    resurrections: int = 0
    expected: int = 0
    survived: int = 0
    starts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def survival(self) -> float:
        return self.survived / self.expected if self.expected else 0.0

    def line(self, name: str) -> str:
        return (f"crash[{name}]: kills {self.kills} ({self.torn} torn writes), keys checked {self.keys_checked}, "
                f"wrong values {self.wrong}, resurrections {self.resurrections}, survival "
                f"{100 * self.survival:.1f} % ({self.survived}/{self.expected} on the device before the kill), "
                f"starts {self.starts}")


def _writer(target: Target, img: str, logpath: str, seed: int, seq: int, kill_at: int, torn: bool) -> None:
    fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        rnd = random.Random(seed)
        dev = KillDevice(img, target.device_size, kill_at, torn)
        h = target.open(dev)
        os.write(fd, b"S %d\n" % seq)
        dirty = True
        while True:
            seq += 1
            key = b"k%d" % rnd.randrange(target.keys)
            r = rnd.random()
            if r < 0.08:
                os.write(fd, b"B %d R %s 0\n" % (seq, key))
                h.delete(key)
            elif r < 0.25:
                os.write(fd, b"B %d G %s 0\n" % (seq, key))
                got = h.get(key)
                os.write(fd, b"G %d %s %d\n" % (seq, key, -1 if got is None else int(got.split(b"|")[1])))
            elif r < 0.25 + target.close_rate:
                os.write(fd, b"B %d C - 0\n" % seq)
                h.close()
                os.write(fd, b"W %d\n" % seq)
                h = target.open(dev)
            else:
                size = rnd.choice(target.sizes)
                os.write(fd, b"B %d S %s %d\n" % (seq, key, size))
                h.set(key, value(key, seq, size))
            os.write(fd, b"A %d\n" % seq)
            clean = h.on_device()
            if clean and dirty:
                os.write(fd, b"W %d\n" % seq)
            dirty = not clean
    except BaseException:
        os.write(fd, b"E " + traceback.format_exc().replace("\n", " | ").encode() + b"\n")
    finally:
        os._exit(3)


@dataclass
class Op:
    seq: int
    kind: str
    size: int
    acked: bool = False
    flushed: bool = False      # a "W" of the same writer covered it


class History:
    """The op log, parsed incrementally, and per key what reads have seen."""

    def __init__(self, path: Path, writer_reads: bool) -> None:
        self.path = path
        self.writer_reads = writer_reads      # whether the writer's reads set floors
        self.at = 0
        self.ops: dict[bytes, list[Op]] = {}
        self.by_seq: dict[int, Op] = {}
        self.last_seq = 0
        self.unflushed: list[Op] = []           # this writer's sets no "W" covered yet
        self.floor: dict[bytes, int] = {}      # values with a lower seq may not come back
        self.errors: list[str] = []

    def read(self) -> None:
        data = self.path.read_bytes()
        chunk, self.at = data[self.at:], len(data)
        if not chunk.endswith(b"\n"):          # a line cut by the kill
            cut = chunk.rfind(b"\n") + 1
            self.at -= len(chunk) - cut
            chunk = chunk[:cut]
        for line in chunk.splitlines():
            p = line.split()
            if not p:
                continue
            if p[0] == b"S":
                self.unflushed = []                  # a new writer: its "W"s say nothing of the last one's
            elif p[0] == b"B":
                seq, kind, key, size = int(p[1]), p[2].decode(), p[3], int(p[4])
                op = Op(seq, kind, size)
                self.by_seq[seq] = op
                self.last_seq = max(self.last_seq, seq)
                if kind in "SR":
                    self.ops.setdefault(key, []).append(op)
                if kind == "S":
                    self.unflushed.append(op)
            elif p[0] == b"A":
                op = self.by_seq.get(int(p[1]))
                if op is not None:
                    op.acked = True
            elif p[0] == b"W":
                w = int(p[1])
                for op in self.unflushed:
                    op.flushed = op.flushed or (op.acked and op.seq <= w)
                self.unflushed = [op for op in self.unflushed if not op.flushed and op.seq > w]
            elif p[0] == b"G" and self.writer_reads:
                self.observe(p[2], int(p[3]), int(p[1]))
            elif p[0] == b"E":
                self.errors.append(line.decode(errors="replace"))

    def observe(self, key: bytes, got: int, at: int) -> None:
        """A read at ``at`` saw set ``got`` (-1: nothing): nothing older may come back."""
        self.floor[key] = max(self.floor.get(key, 0), at if got < 0 else got)


def check(hist: History, target: Target, get: Callable[[bytes], bytes | None], fig: Figures) -> None:
    """Every key of the history through ``get`` (after a restart): see the module docstring."""
    def on_device(o: Op) -> bool:
        return (o.kind == "R" or target.durable or o.size + len(key) <= target.small
                or o.flushed)

    for key, ops in hist.ops.items():
        got = get(key)
        fig.keys_checked += 1
        newest = ops[-1]
        acked = max((o.seq for o in ops if o.acked and on_device(o)), default=0)
        floor = max(acked, hist.floor.get(key, 0))
        if newest.kind == "S" and newest.acked and on_device(newest):
            fig.expected += 1
            fig.survived += got == value(key, newest.seq, newest.size)
        if got is None:
            hist.observe(key, -1, hist.last_seq)
            continue
        try:
            head, s, _ = got.split(b"|", 2)
            s = int(s)
        except ValueError:
            s = -1
        op = hist.by_seq.get(s)
        if head != key or op is None or op.kind != "S" or got != value(key, s, op.size) or op not in ops:
            fig.wrong += 1
            fig.failures.append(f"{key!r}: a value never set for it ({got[:40]!r})")
            continue
        if s < floor:
            fig.resurrections += 1
            fig.failures.append(f"{key!r}: set {s} came back, older than {floor} (acked {acked}); "
                                f"ops {[(o.seq, o.kind, o.size, o.acked, o.flushed) for o in ops[-4:]]}")
        hist.observe(key, s, s)


def run_kills(target: Target, tmp: Path, kills: int, seed: int, check_open: Callable[[Any], Any],
              fig: Figures | None = None) -> Figures:
    """``kills`` rounds of: fork a writer, let it die, reopen with ``check_open(device)``
    (a handle with get and start) and check every key."""
    fig = fig or Figures()
    rnd = random.Random(seed)
    img, logp = tmp / f"{target.name}.img", tmp / f"{target.name}.log"
    hist = History(logp, target.durable)
    for kill in range(kills):
        kill_at = rnd.choice([0, rnd.randrange(1, 80)])
        torn = kill_at > 0 and rnd.random() < 0.5
        pid = os.fork()
        if pid == 0:
            _writer(target, str(img), str(logp), seed * 1000 + kill, hist.last_seq + 10, kill_at, torn)
        status = None
        if not kill_at:
            deadline = time.monotonic() + 30   # wait for the child's open, then a random while
            while (not logp.exists() or logp.stat().st_size <= hist.at) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0.0, 0.15))
        else:
            deadline = time.monotonic() + 0.6   # it kills itself; or the parent does soon after
            while status is None and time.monotonic() < deadline:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                else:
                    time.sleep(0.005)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
            f"the writer exited with {status}: {logp.read_text()[-2000:]}"
        fig.kills += 1
        fig.torn += torn
        hist.read()
        assert not hist.errors, hist.errors[:3]
        dev = FileDevice(str(img), target.device_size)
        try:
            h = check_open(dev)                            # zero exceptions on reopen
            kind = h.start.split(":")[0] if not h.start.startswith("cold") else h.start[:100]
            fig.starts[kind] = fig.starts.get(kind, 0) + 1
            check(hist, target, h.get, fig)
        finally:
            dev.close()                                    # no close(): the checker crashes too
        hist.last_seq += 1                                 # the checker's reads come after the writer's ops
    return fig


FLOOR = 0.90
"""Of the items on the device (sealed regions, written buckets) at a kill, the share that
must be served after it."""


def assert_figures(fig: Figures, name: str, kills: int) -> None:
    """Record ``fig`` for the terminal summary, then hold it to the contract: every kill
    done, no wrong value, no resurrection, enough items to judge and at least FLOOR of
    them survived."""
    REPORT.append(fig.line(name))
    print(fig.line(name))
    assert fig.kills == kills
    assert fig.wrong == 0 and fig.resurrections == 0, fig.failures[:5]
    assert fig.expected >= kills, "too few items were on the device at the kills to judge survival"
    assert fig.survival >= FLOOR, fig.line(name)
