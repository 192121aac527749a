"""The strict crash test at the router (engines.navy): a forked writer SIGKILLed at random
points (a timer, or its own Nth device write, half of them torn: so during region seals,
checkpoints, close() and the recovery's own writes), reopened and checked key by key
against the history of acknowledged operations (tests/engines/crash_harness.py says
what counts as wrong and as a resurrection). Both durability modes: the default (a
BlockCache set is on the device once its region, or a tail write, carried it) and
durable (write_through: every set and delete is on the device when it returns).
The figures are printed in pytest's terminal summary."""
from __future__ import annotations

import random

import pytest

from engines.device import run
from engines.navy import Navy
from flashcache.devices.file import FileDevice
from tests.engines.crash_harness import MIB, REPORT, Target, assert_figures, run_kills
from tests.engines.memdevice import PidDevice



def open_navy(dev, durable: bool):
    return Navy(dev, region_size=MIB, bighash_fraction=0.2, small_item_max=1024,
                blockcache_options={"durable": durable, "checkpoint_regions": 2, "checkpoint_seconds": 0})


class NavyHandle:
    def __init__(self, dev, durable: bool) -> None:
        self.dev, self.nv = dev, open_navy(dev, durable)
        self.start = self.nv.start

    def set(self, k, v):
        run(self.nv.insert(k, v), self.dev)

    def delete(self, k):
        run(self.nv.remove(k), self.dev)

    def get(self, k):
        return run(self.nv.lookup(k), self.dev)

    def close(self):
        self.nv.close()

    def on_device(self):
        return not self.nv.blockcache.regions.dirty


def target(durable: bool) -> Target:
    return Target(f"navy-{'durable' if durable else 'default'}", lambda dev: NavyHandle(dev, durable),
                  16 * MIB, small=1024, durable=durable)


def crash_run(tmp_path, durable: bool, kills: int, seed: int):
    t = target(durable)
    fig = run_kills(t, tmp_path, kills, seed, lambda dev: NavyHandle(dev, durable))
    assert_figures(fig, t.name, kills)
    assert fig.starts.get("recovered after a crash", 0) >= kills // 2, fig.starts
    return fig


def tag_split_steps(nv, dev) -> None:
    """Mark the device's writes made inside a step of the moving split (dev.step = "split"),
    so the crash points can be chosen among them."""
    step = nv.step_split

    def tagged():
        dev.step = "split"
        try:
            return (yield from step())
        finally:
            dev.step = ""
    nv.step_split = tagged


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
def test_sigkill_at_random_points_loses_little_and_never_serves_an_older_value(tmp_path, durable):
    crash_run(tmp_path, durable, kills=25, seed=1234 + durable)


@pytest.mark.slow
@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
def test_sigkill_500_times(tmp_path, durable):
    crash_run(tmp_path, durable, kills=200, seed=99 + durable)


# -- the moving split ("auto"): kills during splits, lends and their checkpoints -------------

def open_moving(dev, split_every: int = 1):
    return Navy(dev, region_size=256 << 10, bighash_fraction="auto", small_item_max=1024, split_every=split_every,
                blockcache_options={"checkpoint_regions": 2, "checkpoint_seconds": 0})


class MovingHandle(NavyHandle):
    def __init__(self, dev, durable: bool = False) -> None:
        self.dev, self.nv = dev, open_moving(dev)
        self.start = self.nv.start


def test_sigkill_while_the_split_moves_serves_no_wrong_or_deleted_value(tmp_path):
    """The split moving under the kills: a device whose mix says small items (seeded
    first, kept in its superblock) while BigHash holds the 25 % prior, a split step after
    every insert, so the kills land in splits (bucket writes), lends and the checkpoints
    that record the boundary. No wrong value and no resurrection; what a kill loses is
    only misses (the survival floor is lower than the fixed split's: a crash forgets the
    splits since the last checkpoint, and the keys they moved)."""
    t = Target("navy-moving", MovingHandle, 16 * MIB, small=1024, durable=False,
               sizes=(40, 300, 900, 900, 900, 3000, 20_000), keys=1500)
    dev = FileDevice(str(tmp_path / f"{t.name}.img"), t.device_size)
    nv = open_moving(dev, split_every=0)     # the split does not move yet
    first = nv.bighash.nbuckets
    for i in range(14_000):             # small items: the mix asks for most of the flash
        run(nv.insert(b"seed%d" % i, b"s" * 800), dev)
    assert nv.bighash.nbuckets == first and nv.stats()["split"]["target_buckets"] > first + 1000
    nv.close()
    dev.close()
    fig = run_kills(t, tmp_path, 30, 4321, MovingHandle)
    REPORT.append(fig.line(t.name))
    assert fig.kills == 30 and fig.wrong == 0 and fig.resurrections == 0, fig.failures[:5]
    assert fig.expected >= 30 and fig.survival >= 0.6, fig.line(t.name)
    dev = FileDevice(str(tmp_path / f"{t.name}.img"), t.device_size)
    nv = open_moving(dev)
    split = nv.stats()["split"]
    dev.close()
    # the boundary moved during the kills too (what a checkpoint recorded), and regions were lent
    assert nv.bighash.nbuckets >= first + 300, (first, split)
    assert split["blockcache_regions"] <= nv.blockcache.nregions - 5, split


def test_sigkill_while_the_split_shrinks_serves_no_wrong_or_deleted_value(tmp_path):
    """The split shrinking under the kills: a device grown by small items, then shown
    large ones (split frozen) so the mix asks for a much smaller BigHash; the kills then
    land in merges (the parent's union, the emptied child) and the checkpoints that give
    BlockCache its regions back. No wrong value and no resurrection; misses allowed."""
    t = Target("navy-shrinking", MovingHandle, 16 * MIB, small=1024, durable=False,
               sizes=(40, 300, 900, 900, 900, 3000, 20_000), keys=1500)
    dev = FileDevice(str(tmp_path / f"{t.name}.img"), t.device_size)
    nv = open_moving(dev, split_every=1)
    for i in range(14_000):             # small items: BigHash grows
        run(nv.insert(b"seed%d" % i, b"s" * 800), dev)
    nv.close()
    nv = open_moving(dev, split_every=0)
    grown, limit = nv.bighash.nbuckets, nv.blockcache.limit
    i = 0
    while nv.merge_floor() > grown - 800:   # then large ones: the mix asks for much less
        run(nv.insert(b"big%d" % i, b"b" * 60_000), dev)
        i += 1
    assert nv.bighash.nbuckets == grown
    nv.close()
    dev.close()
    fig = run_kills(t, tmp_path, 30, 5678, MovingHandle)
    REPORT.append(fig.line(t.name))
    assert fig.kills == 30 and fig.wrong == 0 and fig.resurrections == 0, fig.failures[:5]
    assert fig.expected >= 30 and fig.survival >= 0.6, fig.line(t.name)
    dev = FileDevice(str(tmp_path / f"{t.name}.img"), t.device_size)
    nv = open_moving(dev)
    split = nv.stats()["split"]
    dev.close()
    # the boundary moved back during the kills (what a checkpoint recorded), regions came back
    assert nv.bighash.nbuckets <= grown - 300, (grown, split)
    assert split["blockcache_regions"] >= limit + 5, (limit, split)


class RecordingDevice(PidDevice):
    """A PidDevice that records every write (offset, bytes) once ``recording`` is set,
    with what was running: ``step`` is "split" inside a step of the moving split."""

    def __init__(self, size: int) -> None:
        super().__init__(size, block_size=4096)
        self.recording, self.step = False, ""
        self.writes: list[tuple[int, bytes, str]] = []

    def write(self, offset, data, stream=None):
        if self.recording:
            self.writes.append((offset, bytes(data), self.step))
        super().write(offset, data, stream)


def test_a_crash_at_every_write_of_the_moving_split_serves_no_wrong_or_deleted_value():
    """Every write made by a step of the moving split (the new bucket, the parent, the
    lend's checkpoint, also torn in half) is a crash point:
    the device as it was just before it (and with half of it) is reopened and every key
    checked against the operations acknowledged by then. A value never set, or older than
    the newest acknowledged set or delete of its key, fails; a miss is allowed (a crash
    forgets the splits since the last checkpoint, and the keys they moved)."""
    rnd = random.Random(11)
    dev = RecordingDevice(8 * MIB)
    nv = Navy(dev, region_size=128 << 10, bighash_fraction="auto", small_item_max=1024, split_every=0)
    # the seed: large items filling BlockCache (so a lend evicts sealed regions), then
    # small ones: the mix asks BigHash for about 40 %, it holds the 25 % prior
    truth: dict[bytes, list[tuple[int, int, bytes | None]]] = {}   # key -> [(start, end, value)]
    for i in range(120):
        run(nv.insert(b"L%d" % i, b"L" * 60_000), dev)
    for i in range(6000):
        k = b"s%d" % i
        run(nv.insert(k, k + b"|0|" + b"s" * 780), dev)
        truth[k] = [(-1, -1, k + b"|0|" + b"s" * 780)]
    nv.close()
    base = bytes(dev.buf)
    nv = Navy(dev, region_size=128 << 10, bighash_fraction="auto", small_item_max=1024, split_every=1)
    first, limit0 = nv.bighash.nbuckets, nv.blockcache.limit
    tag_split_steps(nv, dev)
    dev.recording = True
    for op in range(1, 161):
        k = b"s%d" % rnd.randrange(6000) if rnd.random() < 0.8 else b"new%d" % op
        start = len(dev.writes)
        r = rnd.random()
        if r < 0.25:
            run(nv.remove(k), dev)
            value = None
        elif r < 0.35:                                 # a large item: in BlockCache's buffer at a lend
            k = b"big%d" % op
            value = k + b"|%d|" % op + b"b" * 3000
            run(nv.insert(k, value), dev)
        else:
            value = k + b"|%d|" % op + b"n" * rnd.choice((100, 500, 900))
            run(nv.insert(k, value), dev)
        truth.setdefault(k, []).append((start, len(dev.writes), value))
    dev.recording = False
    grown, lent = nv.bighash.nbuckets - first, limit0 - nv.blockcache.limit
    assert grown >= 120 and lent >= 3, (grown, lent)

    points = [(i, False) for i, w in enumerate(dev.writes) if w[2] == "split"]
    points += [(i, True) for i, w in enumerate(dev.writes) if w[2] == "split" and len(w[1]) >= 2 * 4096]
    kinds = {"bucket" if len(dev.writes[i][1]) == 4096 and dev.writes[i][0] >= nv.bighash.offset else
             "metadata" if dev.writes[i][0] < nv.meta_end else "region" for i, _ in points}
    assert {"bucket", "metadata"} <= kinds and len(points) >= 200, (kinds, len(points))
    image = bytearray(base)
    applied = 0
    checked = expected = survived = 0
    for i, torn in sorted(points):
        while applied < i:
            off, data, _ = dev.writes[applied]
            image[off:off + len(data)] = data
            applied += 1
        crashed = PidDevice(8 * MIB, block_size=4096)
        crashed.buf[:] = image
        if torn:
            off, data, _ = dev.writes[i]
            half = len(data) // 2 // 4096 * 4096
            crashed.buf[off:off + half] = data[:half]
        n2 = Navy(crashed, region_size=128 << 10, bighash_fraction="auto", small_item_max=1024, split_every=0)
        assert n2.start.startswith("recovered after a crash") or n2.start == "warm" or "cold" in n2.start, n2.start
        for k, ops in truth.items():
            if len(ops) == 1 and rnd.random() < 0.95:
                continue                               # untouched seed keys: a sample
            done = [(e, v) for s, e, v in ops if e <= i]    # acknowledged before the crash
            running = [v for s, e, v in ops if s <= i < e]
            allowed = {None, *(v for _, v in done[-1:]), *running}
            got = run(n2.lookup(k), crashed)
            checked += 1
            assert got in allowed, (i, torn, k, got[:20] if got else got, done[-1:], running)
            if done and done[-1][0] >= 0 and done[-1][1] is not None and not running:
                expected += 1                          # set while the split moved, and acknowledged
                survived += got == done[-1][1]
    # what is lost is the keys the splits since the last checkpoint moved (and what BigHash
    # evicted since): most of what was set while the split moved is still there
    print(f"crash points {len(points)}, keys checked {checked}, survival {survived}/{expected}")
    assert checked >= 10_000 and expected >= 5000 and survived >= 0.7 * expected, (checked, expected, survived)


def crash_points_check(dev, base: bytes, nv: Navy, truth: dict, rnd: random.Random, open_again) -> tuple[int, int, int, int]:
    """Reopen the device as it was just before each write of a step of the moving split
    (and with half of each multi-block one) and check every key of ``truth`` (a sample of
    the untouched ones) against the operations acknowledged by then. Returns (crash
    points, keys checked, acknowledged sets expected, of them found)."""
    points = [(i, False) for i, w in enumerate(dev.writes) if w[2] == "split"]
    points += [(i, True) for i, w in enumerate(dev.writes) if w[2] == "split" and len(w[1]) >= 2 * 4096]
    kinds = {"bucket" if len(dev.writes[i][1]) == 4096 and dev.writes[i][0] >= nv.bighash.offset else
             "metadata" if dev.writes[i][0] < nv.meta_end else "region" for i, _ in points}
    assert {"bucket", "metadata"} <= kinds, kinds
    image = bytearray(base)
    applied = checked = expected = survived = 0
    for i, torn in sorted(points):
        while applied < i:
            off, data, _ = dev.writes[applied]
            image[off:off + len(data)] = data
            applied += 1
        crashed = PidDevice(8 * MIB, block_size=4096)
        crashed.buf[:] = image
        if torn:
            off, data, _ = dev.writes[i]
            half = len(data) // 2 // 4096 * 4096
            crashed.buf[off:off + half] = data[:half]
        n2 = open_again(crashed)
        assert n2.start.startswith("recovered after a crash") or n2.start == "warm" or "cold" in n2.start, n2.start
        for k, ops in truth.items():
            if len(ops) == 1 and rnd.random() < 0.95:
                continue                               # untouched seed keys: a sample
            done = [(e, v) for s, e, v in ops if e <= i]    # acknowledged before the crash
            running = [v for s, e, v in ops if s <= i < e]
            allowed = {None, *(v for _, v in done[-1:]), *running}
            got = run(n2.lookup(k), crashed)
            checked += 1
            assert got in allowed, (i, torn, k, got[:20] if got else got, done[-1:], running)
            if done and done[-1][0] >= 0 and done[-1][1] is not None and not running:
                expected += 1
                survived += got == done[-1][1]
    return len(points), checked, expected, survived


def test_a_crash_at_every_write_of_a_shrinking_split_serves_no_wrong_or_deleted_value():
    """The same crash points as above while BigHash shrinks (each step a merge: the
    parent's union, the emptied child; the checkpoints that give BlockCache its regions
    back): the device grown by a small-item mix, then a large-item mix, then keys of the
    merging buckets set and deleted while every insert merges. No value never set or
    older than the newest acknowledged set or delete (a deleted key never comes back
    from the parent or the child); misses allowed (the keys merges moved since the last
    checkpoint)."""
    rnd = random.Random(12)
    dev = RecordingDevice(8 * MIB)

    def open_at(d, every):
        return Navy(d, region_size=128 << 10, bighash_fraction="auto", small_item_max=1024, split_every=every)
    nv = open_at(dev, 1)
    truth: dict[bytes, list[tuple[int, int, bytes | None]]] = {}
    for i in range(60):
        run(nv.insert(b"L%d" % i, b"L" * 60_000), dev)
    for i in range(6000):                              # the mix turns small: BigHash grows
        k = b"s%d" % i
        run(nv.insert(k, k + b"|0|" + b"s" * 780), dev)
        truth[k] = [(-1, -1, k + b"|0|" + b"s" * 780)]
    grown = nv.bighash.nbuckets
    nv.close()
    nv = open_at(dev, 0)                               # then large: the split frozen meanwhile
    i = 0
    while nv.merge_floor() > grown - 250:
        run(nv.insert(b"M%d" % i, b"M" * 60_000), dev)
        i += 1
    nv.close()
    for k in list(truth):                              # the large ones pushed some small ones out
        got = run(nv.lookup(k), dev)
        if got is None:
            truth[k] = [(-1, -1, None)]
    base = bytes(dev.buf)
    nv = open_at(dev, 1)
    first, limit0, splits0 = nv.bighash.nbuckets, nv.blockcache.limit, nv.bighash.stats()["splits"]
    assert first == grown
    tag_split_steps(nv, dev)
    dev.recording = True
    for op in range(1, 241):
        k = b"s%d" % rnd.randrange(6000) if rnd.random() < 0.8 else b"new%d" % op
        start = len(dev.writes)
        r = rnd.random()
        if r < 0.3:
            run(nv.remove(k), dev)
            value = None
        elif r < 0.4:                                  # a large item: in BlockCache's buffer at a take-back
            k = b"big%d" % op
            value = k + b"|%d|" % op + b"b" * 3000
            run(nv.insert(k, value), dev)
        else:
            value = k + b"|%d|" % op + b"n" * rnd.choice((100, 500, 900))
            run(nv.insert(k, value), dev)
        truth.setdefault(k, []).append((start, len(dev.writes), value))
    dev.recording = False
    s = nv.stats()["split"]
    assert first - nv.bighash.nbuckets >= 150 and s["merges"] >= 150 and s["splits"] == splits0, s
    assert s["taken_back"] >= 3 and nv.blockcache.limit >= limit0 + 3, s
    npoints, checked, expected, survived = crash_points_check(dev, base, nv, truth, rnd, lambda d: open_at(d, 0))
    print(f"merge crash points {npoints}, keys checked {checked}, survival {survived}/{expected}")
    # measured: see the note; what is lost is the keys merges moved since the last checkpoint
    assert npoints >= 300 and checked >= 10_000 and expected >= 3000 and survived >= 0.6 * expected, (
        npoints, checked, expected, survived)
