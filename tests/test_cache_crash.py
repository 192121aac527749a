"""The strict crash test at the Cache (DRAM tier in front of flash), write_through both
ways: a forked writer SIGKILLed at random points (tests/engines/crash_harness.py), then
the cache reopened and every key checked against the history of acknowledged sets and
deletes. With write_through every acknowledged set must survive (bar evictions, >= 90 %);
without, a set survives once a clean close (or a demotion) put it on flash, and nothing
older than the newest acknowledged set or delete ever comes back (Cache.set and delete
remove the flash copy durably at once). The figures are printed in pytest's terminal
summary."""
from __future__ import annotations

import pytest

import flashcache
from flashcache import config
from tests.engines.crash_harness import MIB, Target, assert_figures, run_kills



def conf(write_through: bool):
    return config.from_dict({
        "device": {"kind": "file", "path": "unused.img", "size": "16MiB"},
        "cache": {"dram_size": "512KiB", "write_through": write_through,
                  "flash": {"region_size": "1MiB", "small_item_max": "1KiB", "bighash_fraction": 0.2,
                            "checkpoint_regions": 2}}})


class CacheHandle:
    def __init__(self, dev, write_through: bool) -> None:
        self.c = flashcache.Cache(conf(write_through), device=dev)
        self.write_through = write_through
        self.start = self.c.stats()["start"]

    def set(self, k, v):
        self.c.set(k, v)

    def delete(self, k):
        self.c.delete(k)

    def get(self, k):
        return self.c.get(k)

    def close(self):
        self.c.close()

    def on_device(self):
        return self.write_through


def crash_run(tmp_path, write_through: bool, kills: int, seed: int):
    t = Target(f"cache-write_through={'true' if write_through else 'false'}",
               lambda dev: CacheHandle(dev, write_through), 16 * MIB, small=0, durable=write_through,
               close_rate=0.005 if write_through else 0.03)
    fig = run_kills(t, tmp_path, kills, seed, lambda dev: CacheHandle(dev, write_through))
    assert_figures(fig, t.name, kills)
    return fig


@pytest.mark.parametrize("write_through", [False, True], ids=["default", "write_through"])
def test_cache_sigkill_at_random_points(tmp_path, write_through):
    crash_run(tmp_path, write_through, kills=12, seed=777 + write_through)


@pytest.mark.slow
@pytest.mark.parametrize("write_through", [False, True], ids=["default", "write_through"])
def test_cache_sigkill_many_times(tmp_path, write_through):
    crash_run(tmp_path, write_through, kills=60, seed=31 + write_through)
