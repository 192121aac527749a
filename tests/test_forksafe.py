"""Fork safety (flashcache/forksafe.py): a child made by fork() refuses the Cache, the io_uring
rings and the asynchronous readers it inherited, at once and with a clear error, writes
nothing and takes nothing of the parent's; the parent carries on as if no fork happened.
Every child runs under a deadline (tests.devices.helpers.in_child): a hang fails.
(The devices themselves: tests/devices/test_ownership.py.)"""
from __future__ import annotations

import os
import select
import threading
from pathlib import Path

import pytest

import flashcache
from flashcache import config
from flashcache.devices.uring import UringDevice
from flashcache.uring import Ring, address_of
from tests.devices.helpers import digest, in_child, outcome

ENGINES = ["psync", "uring", "emulated"]


def conf(tmp_path: Path, engine: str) -> "config.Config":
    (tmp_path / "dev").mkdir(exist_ok=True)
    device = (f'kind = "file"\nengine = "{engine}"' if engine != "emulated" else
              'kind = "emulated"\n[device.emulator]\npreset = "small-test"')
    return config.loads(f"""
[device]
path = "{tmp_path}/dev/dev.img"
size = "64MiB"
{device}
[cache]
dram_size = "256KiB"
[cache.flash]
region_size = "1MiB"
bighash_fraction = 0.25
small_item_max = "1KiB"
""", "fork.toml")


def items(prefix: bytes, n: int) -> dict[bytes, bytes]:
    """Small items (BigHash) and every tenth a large one (BlockCache)."""
    return {prefix + b"%d" % i: bytes([i % 251]) * (20_000 if i % 10 == 0 else 300) for i in range(n)}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_forked_child_refuses_an_inherited_cache_and_the_parent_carries_on(tmp_path, engine):
    c = flashcache.Cache(conf(tmp_path, engine))
    first = items(b"k", 1500)
    c.set_many(first)
    assert c.stats()["since_open"]["demotions"] > 500                  # most of them are on flash
    folder = tmp_path / "dev"
    before = digest(folder)
    me = os.getpid()
    key = next(iter(first))

    def child():
        got = {
            "get": outcome(lambda: c.get(key)),
            "get of a str key": outcome(lambda: c.get("k1")),
            "in": outcome(lambda: key in c),
            "set": outcome(lambda: c.set(b"new", b"v" * 300)),
            "delete": outcome(lambda: c.delete(key)),
            "touch": outcome(lambda: c.touch(key, 60)),
            "get_many": outcome(lambda: c.get_many([key, b"k2"])),
            "set_many": outcome(lambda: c.set_many({b"a": b"b"})),
        }
        got["close"] = outcome(c.close)
        got["get after close"] = outcome(lambda: c.get(key))
        return got

    got = in_child(child)
    for name, said in got.items():
        if name == "close":
            assert said == "returned None", got
            continue
        assert said.startswith("ForkedError: flashcache: "), (name, said)
        assert f"this Cache was opened in process {me} and inherited by fork()" in said, said
        assert "open a new Cache in the child" in said, said
    assert digest(folder) == before                       # the child wrote nothing, close() included
    assert c.get_many(list(first)) == first
    second = items(b"n", 300)
    c.set_many(second)
    assert c.delete(key)
    c.close()
    del first[key]
    with flashcache.Cache(conf(tmp_path, engine)) as again:
        assert again.stats()["start"] == "warm"
        assert again.get(key) is None
        assert again.get_many(list(first) + list(second)) == {**first, **second}


@pytest.mark.parametrize("engine", ["psync", "uring"])
def test_a_fork_while_another_thread_does_io_does_not_hang_the_child(tmp_path, engine):
    """A parent thread in the middle of flash I/O at the fork may hold a device or ring
    lock that nobody in the child will release: the child's refusal takes no lock."""
    c = flashcache.Cache(conf(tmp_path, engine))
    data = items(b"k", 1500)
    c.set_many(data)
    keys = list(data)
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy():
        i = 0
        try:
            while not stop.is_set():
                k = keys[i % len(keys)]
                assert c.get(k) == data[k]
                if i % 7 == 0:
                    c.set(k, data[k])
                i += 1
        except BaseException as e:                      # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=busy)
    t.start()
    try:
        for _ in range(5):
            got = in_child(lambda: [outcome(lambda k=k: c.get(k)) for k in keys[:50:5]], timeout=20)
            assert all(g.startswith("ForkedError: ") for g in got), got
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert c.get_many(keys) == data
    c.close()


def test_a_forked_child_refuses_an_inherited_ring():
    r = Ring(8)
    buf = bytearray(4096)
    me = os.getpid()
    got = in_child(lambda: {
        "prep_nop": outcome(lambda: r.prep_nop(1)),
        "submit": outcome(r.submit),
        "wait": outcome(lambda: r.wait(1)),
        "reap": outcome(r.reap),
        "rw_one": outcome(lambda: r.rw_one(False, 0, address_of(buf), 4096, 0)),
        "register_eventfd": outcome(r.register_eventfd),
        "close": outcome(r.close),
    })
    for name, said in got.items():
        if name == "close":
            assert said == "returned None"
        else:
            assert said.startswith("ForkedError: io_uring: "), (name, said)
            assert f"this io_uring ring was opened in process {me}" in said, said
    r.prep_nop(7)                                         # the parent's ring is as it was
    r.submit(1)
    assert [c.user_data for c in r.reap()] == [7]
    r.close()


def test_a_forked_child_leaves_the_parents_async_completions_alone(tmp_path):
    """The reader's ring and eventfd are shared with the child: a reap there would take
    the parent's wake-up and completions. The child is refused; the parent gets both."""
    d = UringDevice(str(tmp_path / "a.img"), 1 << 20)
    d.write(8192, b"z" * 4096)
    rd = d.async_reader(depth=8)
    (tok,) = rd.submit([(8192, 4096)])
    got = in_child(lambda: {"reap": outcome(rd.reap), "submit": outcome(lambda: rd.submit([(0, 4096)])),
                            "close": outcome(rd.close)})
    assert got["reap"].startswith("ForkedError: ") and "asynchronous reader was opened" in got["reap"], got
    assert got["submit"].startswith("ForkedError: "), got
    assert got["close"] == "returned None"
    assert select.select([rd.eventfd], [], [], 10)[0], "the parent's completion signal was taken"
    assert rd.reap() == [(tok, b"z" * 4096)]
    rd.close()
    d.close()
