"""The Engine interface (engines/engine.py): a third engine written in the tests
(tests/engines/tiny_engine.py, no C) plugs into the router with one line, and the router
treats it as it treats BigHash and BlockCache: size routing, lookups and removes through
both the generators and the C Router, its own placement stream, the superblock, warm
restart and stats."""
from __future__ import annotations

import random

import pytest

from engines import superblock
from engines.bighash import BigHash
from engines.blockcache import BlockCache
from engines.device import run
from engines.engine import Engine
from engines.navy import Navy, Slot
from tests.engines.memdevice import PidDevice
from tests.engines.tiny_engine import Tiny

MIB = 1 << 20


def three(dev: PidDevice, tiny: bool = True) -> Navy:
    """BlockCache, BigHash up to 512 B, and (the one line) Tiny from 513 B to 2000 B."""
    slots = [Slot(BlockCache, 0.6, None, {"region_size": MIB}),
             Slot(BigHash, 0.2, 512, {"bucket_size": 4096})]
    if tiny:
        slots.append(Slot(Tiny, 0.2, 2000, {"slot_size": 4096}))
    return Navy(dev, engines=slots)


def test_the_test_engine_is_an_engine():
    assert issubclass(Tiny, Engine) and Tiny.name == "tiny"
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (Engine,), {"name": "half"})()       # an engine that misses a step is refused


def test_a_third_engine_plugs_in_with_one_line():
    dev = PidDevice(64 * MIB, block_size=4096)
    n = three(dev)
    assert list(n.engines) == ["blockcache", "bighash", "tiny"]
    lay = n.layout["engines"]
    assert lay["tiny"]["offset"] == lay["bighash"]["offset"] + lay["bighash"]["size"]
    assert lay["tiny"]["offset"] + lay["tiny"]["size"] <= dev.size and lay["tiny"]["slot_size"] == 4096
    # size classes: each item to the smallest class that takes it
    assert [n.engine_for(1, v) for v in (100, 511, 512, 1999, 50_000)] == \
        ["bighash", "bighash", "tiny", "tiny", "blockcache"]
    assert n.insert_now(dev, b"s", b"x" * 100)                    # BigHash: in C
    assert run(n.insert(b"m", b"y" * 1000), dev)                  # Tiny: the generator
    assert n.insert_now(dev, b"m2", b"z" * 1500)                  # Tiny: the Router declines, Python does it
    assert run(n.insert(b"l", b"w" * 50_000), dev)               # BlockCache
    for key, value in ((b"s", b"x" * 100), (b"m", b"y" * 1000), (b"m2", b"z" * 1500), (b"l", b"w" * 50_000)):
        assert run(n.lookup_item(key), dev) == n.lookup_item_now(dev, key) == n.lookup_now(key) == (value, 0.0)
    assert n.engines["tiny"].counters["hits"] == 6                 # m and m2, three ways each
    # a key that grows leaves the smaller class, from the C insert and the generator alike
    assert n.insert_now(dev, b"m", b"y" * 40_000) and not n.engines["tiny"].may_hold(b"m")
    assert run(n.insert(b"s", b"x" * 1200), dev) and not n.engines["bighash"].may_hold(b"s")
    assert n.lookup_now(b"m") == (b"y" * 40_000, 0.0) and n.lookup_now(b"s") == (b"x" * 1200, 0.0)
    assert n.may_hold(b"m2") and n.may_hold_now(b"m2")
    assert run(n.remove(b"m2"), dev) and not n.may_hold_now(b"m2") and n.lookup_now(b"m2") is None
    # its own placement stream: BigHash's handle first, then Tiny's, then BlockCache's (smallest class first)
    st = n.stats()
    assert [st[e]["placement"]["pid"] for e in ("bighash", "tiny", "blockcache")] == [1, 2, 3]
    assert st["tiny"]["items"] == 1 and st["tiny"]["admission_rejects"] == 0
    tiny_writes = [s for (op, off, _), s in zip([x for x in dev.log if x[0] == "write"], dev.streams)
                   if lay["tiny"]["offset"] <= off < lay["tiny"]["offset"] + lay["tiny"]["size"]]
    assert tiny_writes and all(s is n.streams["tiny"] for s in tiny_writes)
    # the superblock records it: name, generation, layout
    assert n.close().startswith("saved")
    sb = superblock.Superblock.decode(bytes(dev.buf[:n.block]))
    assert list(sb.layout["engines"]) == ["blockcache", "bighash", "tiny"]
    assert sb.generations["tiny"] == n.engines["tiny"].generation and sb.layout["engines"]["tiny"] == lay["tiny"]
    # warm restart brings it back; a router without it is another layout, and says so
    n2 = three(dev)
    assert n2.start == "warm" and n2.lookup_now(b"s") == (b"x" * 1200, 0.0)
    assert n2.engines["tiny"].may_hold(b"m") is False and n2.stats()["tiny"]["inserts"] == 3
    n2.close()
    n3 = three(dev, tiny=False)
    assert n3.start.startswith("formatted: layout changed") and "engines.tiny removed" in n3.start


def test_the_c_router_and_the_generators_agree_with_a_python_engine():
    """Twin routers over the three engines: one driven through the generators, one through
    the blocking forms (the C Router, calling Tiny's Python forms): the same answers,
    counters and device I/O."""
    da, db = PidDevice(64 * MIB, block_size=4096), PidDevice(64 * MIB, block_size=4096)
    a, b = three(da), three(db)
    rnd = random.Random(4)
    for step in range(800):
        key = b"k%d" % rnd.randrange(150)
        r = rnd.random()
        if r < 0.45:
            value = bytes([step % 251]) * rnd.choice([40, 700, 1800, 9000])
            assert run(a.insert(key, value), da) == b.insert_now(db, key, value)
        elif r < 0.55:
            assert run(a.remove(key), da) == run(b.remove(key), db)
        else:
            assert run(a.lookup_item(key), da) == b.lookup_item_now(db, key)
            assert a.may_hold(key) == b.may_hold_now(key)
    assert da.log == db.log
    sa, sb = a.stats(), b.stats()
    for s in (sa, sb):
        for e in ("bighash", "blockcache", "tiny"):
            s[e].pop("generation", None)
    assert sa == sb and sa["tiny"]["hits"] > 10 and sa["hits"] > 100
