"""BlockCache's crash recovery through the router, case by case: the checkpoint period
(regions and seconds), what a recovery reads, deletes and cross-engine overwrites that
never come back, a torn newest checkpoint, a checkpoint that does not fit, and the
options' errors. (A "crash" is a new Navy on the same device, the old one never closed.)
The random-kill runs are test_crash.py."""
from __future__ import annotations

import logging

import pytest

from engines.blockcache import BlockCache
from engines.device import run
from engines.navy import Navy
from flashcache import config
from flashcache.errors import ConfigError
from tests.clock import FakeClock
from tests.engines.memdevice import PidDevice

MIB = 1 << 20
BIG = 200_000        # 5 per 1 MiB region


def navy(dev, clock=None, **bc) -> Navy:
    return Navy(dev, region_size=MIB, bighash_fraction=0.1, small_item_max=1024, clock=clock or FakeClock(),
                blockcache_options=bc)


def big(tag: int) -> bytes:
    return bytes([tag]) * BIG


@pytest.fixture
def dev():
    return PidDevice(32 * MIB, block_size=4096)


def test_checkpoints_every_n_sealed_regions(dev):
    n = navy(dev, checkpoint_regions=2, checkpoint_seconds=0)
    first = n.stats()["checkpoint"]["written"]
    assert first == 1                          # formatted: a first checkpoint at once
    for i in range(5 * 4):                     # 4 regions sealed (5 items each), the 5th opened
        run(n.insert(b"k%d" % i, big(i)), dev)
    run(n.insert(b"one-more", big(1)), dev)
    assert n.blockcache.stats()["region_writes"] == 4
    assert n.stats()["checkpoint"]["written"] == first + 2


def test_checkpoints_by_time_at_a_seal(dev):
    clock = FakeClock()
    n = navy(dev, clock=clock, checkpoint_regions=0, checkpoint_seconds=30)
    for i in range(11):                        # 2 seals within the period: no checkpoint
        run(n.insert(b"k%d" % i, big(i)), dev)
    assert n.stats()["checkpoint"]["written"] == 1
    clock.t += 31
    for i in range(11, 16):                    # the next seal is past the period
        run(n.insert(b"k%d" % i, big(i)), dev)
    assert n.stats()["checkpoint"]["written"] == 2


def test_a_crash_recovers_sealed_items_and_reads_only_the_checkpoint_and_the_tail(dev):
    n = navy(dev, checkpoint_regions=4)
    for i in range(5 * 12):                    # 12 regions sealed: checkpoints at 4, 8, 12
        run(n.insert(b"k%d" % i, big(i % 250)), dev)
    for i in range(60, 67):                    # 7 more: one more region sealed, 2 items in the buffer
        run(n.insert(b"k%d" % i, big(i % 250)), dev)
    n2 = navy(dev, checkpoint_regions=4)       # the crash
    assert n2.start.startswith("recovered after a crash: blockcache recovered from checkpoint")
    rec = n2.recovery
    bc = n2.blockcache
    got = {i: run(n2.lookup(b"k%d" % i), dev) for i in range(67)}
    assert all(got[i] == big(i % 250) for i in range(65))          # every sealed item
    assert got[65] is None and got[66] is None                     # the buffer's were only in DRAM
    assert rec["regions_replayed"] == 1        # the one sealed since the checkpoint (the open one: nothing written)
    limit = (rec["checkpoint_bytes"] + bc.nregions * n2.block + n2.journal_blocks * n2.block
             + rec["regions_replayed"] * MIB)
    assert rec["bytes_read"] <= limit < dev.size // 4


def test_with_durable_every_acknowledged_insert_survives(dev):
    n = navy(dev, durable=True)
    for i in range(23):
        run(n.insert(b"k%d" % i, big(i)), dev)
    n2 = navy(dev, durable=True)
    assert all(run(n2.lookup(b"k%d" % i), dev) == big(i) for i in range(23))


def test_deletes_and_moves_between_engines_never_bring_an_older_value_back(dev):
    n = navy(dev)
    for i in range(12):                        # two regions sealed
        run(n.insert(b"k%d" % i, big(i)), dev)
    run(n.insert(b"pad", big(99)), dev)
    run(n.remove(b"k1"), dev)                  # a delete of a sealed item
    run(n.insert(b"k2", b"small"), dev)        # the key moves to BigHash
    run(n.insert(b"k3", big(33)), dev)         # an overwrite still in the buffer (default mode)
    n2 = navy(dev)
    assert run(n2.lookup(b"k1"), dev) is None
    assert run(n2.lookup(b"k2"), dev) == b"small"
    assert run(n2.lookup(b"k3"), dev) == big(3)     # the newest on flash: the contract by default
    run(n2.insert(b"k4", b"tiny"), dev)
    n3 = navy(dev)                             # crash again: the journal restarted at the checkpoint
    assert run(n3.lookup(b"k1"), dev) is None and run(n3.lookup(b"k2"), dev) == b"small"
    assert run(n3.lookup(b"k4"), dev) == b"tiny"


def test_a_checkpoint_keeps_a_tombstone_that_shadows_an_entry_still_in_the_buffer(dev):
    """A delete of an item still in the buffer, then a checkpoint (here: the journal full,
    or the moving split's lend): the checkpoint restarts the journal, the item reaches
    flash with the next seal, a crash replays it. The checkpoint carries the tombstone
    (``tombstones``), so the replay drops it again (before: the deleted item came back)."""
    n = navy(dev, checkpoint_regions=0, checkpoint_seconds=0)
    run(n.insert(b"gone", big(7)), dev)            # in the buffer only
    run(n.remove(b"gone"), dev)                    # its tombstone: in the journal
    with n.blockcache.held():
        n._checkpoint(n.blockcache)                # the journal restarts
    for i in range(6):                             # the buffer (with "gone") reaches flash
        run(n.insert(b"p%d" % i, big(i)), dev)
    assert n.blockcache.stats()["region_writes"] >= 1
    n2 = navy(dev)                                 # a crash: replay from that checkpoint
    assert n2.start.startswith("recovered after a crash")
    assert run(n2.lookup(b"gone"), dev) is None
    assert run(n2.lookup(b"p0"), dev) == big(0)


def test_a_torn_newest_checkpoint_leaves_the_previous_one(dev):
    n = navy(dev, checkpoint_regions=1)
    for i in range(12):
        run(n.insert(b"k%d" % i, big(i)), dev)
    newest = n._ckpt["slot"]
    dev.buf[n._slot_at(newest) + n.block + 5] ^= 0xFF       # its body, as a torn write leaves it
    n2 = navy(dev, checkpoint_regions=1)
    assert n2.start.startswith("recovered after a crash")
    assert all(run(n2.lookup(b"k%d" % i), dev) == big(i) for i in range(10))


def test_a_checkpoint_that_does_not_fit_is_skipped_and_said(dev, caplog):
    n = navy(dev, checkpoint_regions=1)
    n.slot_size = n.block + 512                # as if the metadata area were tiny
    with caplog.at_level(logging.WARNING):
        for i in range(12):
            run(n.insert(b"k%d" % i, big(i)), dev)
    assert n.stats()["checkpoint"]["skipped"] >= 1
    assert "does not fit its" in caplog.text and "raise metadata_fraction" in caplog.text
    assert n.close().startswith("not saved: checkpoint of")
    n2 = navy(dev, checkpoint_regions=1)       # only the first checkpoint fit: a longer replay
    assert n2.start.startswith("recovered after a crash: blockcache recovered from checkpoint 1 ")
    assert all(run(n2.lookup(b"k%d" % i), dev) == big(i) for i in range(10))


def test_bad_checkpoint_options_say_what_to_use():
    with pytest.raises(ValueError, match=r"checkpoint_regions = -1: use a whole number of sealed regions"):
        BlockCache(0, 8 * MIB, region_size=MIB, checkpoint_regions=-1)
    with pytest.raises(ValueError, match=r"checkpoint_seconds = 'x': use seconds >= 0"):
        BlockCache(0, 8 * MIB, region_size=MIB, checkpoint_seconds="x")
    with pytest.raises(ConfigError, match=r"cache.flash.checkpoint_regions = -1: must be at least 0"):
        config.from_dict({"cache": {"flash": {"checkpoint_regions": -1}}})
    with pytest.raises(ConfigError, match=r"cache.flash.checkpoint_seconds"):
        config.from_dict({"cache": {"flash": {"checkpoint_seconds": "soon"}}})


def test_a_cache_written_before_crash_recovery_is_reset_once_and_says_why(dev):
    from engines import superblock
    n = navy(dev)
    run(n.insert(b"k", big(1)), dev)
    n.close()
    old = dict(n.layout)                       # the layout as the previous format recorded it
    del old["meta_format"]
    old["engines"] = {k: dict(v) for k, v in old["engines"].items()}
    del old["engines"]["blockcache"]["entry_format"]
    sb = superblock.Superblock(superblock.fingerprint(old), old, {e: 0 for e in old["engines"]})
    dev.buf[:n.block] = sb.encode(n.block)
    n2 = navy(dev)
    assert n2.start == ("formatted: layout changed, the cache was reset (was -> now: "
                        "engines.blockcache.entry_format added, meta_format added)")
    assert run(n2.lookup(b"k"), dev) is None
    assert navy(dev).start.startswith("recovered after a crash")     # once only
