"""The strict crash test at the router (engines.navy): a forked writer SIGKILLed at random
points (a timer, or its own Nth device write, half of them torn: so during region seals,
checkpoints, close() and the recovery's own writes), reopened and checked key by key
against the history of acknowledged operations (tests/engines/crash_harness.py says
what counts as wrong and as a resurrection). Both durability modes: the default (a
BlockCache set is on the device once its region, or a tail write, carried it) and
durable (write_through: every set and delete is on the device when it returns).
The figures are printed in pytest's terminal summary."""
from __future__ import annotations

import pytest

from engines.device import run
from engines.navy import Navy
from flashcache.devices.file import FileDevice
from tests.engines.crash_harness import MIB, REPORT, Target, assert_figures, run_kills



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
