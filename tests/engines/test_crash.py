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
from tests.engines.crash_harness import MIB, Target, assert_figures, run_kills



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
