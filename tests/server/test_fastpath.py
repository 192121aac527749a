"""The twin test of the server's C text path (TextPath, flashcache/_server.c): the same byte
streams, split at random points, go to a server with ``server.accelerate = true`` and to
one with it off (the pure-Python path, the reference); replies, counters, latency sample
counts and the items left must be identical. Pipelines mix what the C path answers (get/gets
DRAM hits, exptime-0 sets) with everything it must hand over unchanged: flash reads in the
middle of a pipeline, misses, other commands, partial lines, bad input, noreply, values over
the size limit, flush_all, keys held by a read-modify-write.

Both servers run in this process on one event loop, without sockets: a Connection on a
transport that records what it is given."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flashcache import config as config_mod
from flashcache.async_cache import AsyncCache
from flashcache.server.server import Connection, Server
from flashcache.server.store import Store

CLOCK = 1_800_000_000.0
ITEM_SIZE_MAX = 4096
KEYS = [b"k%d" % i for i in range(6)] + [b"key:" + b"x" * 60, b"\x01ctl"]


class Transport:
    """What a Connection needs of an asyncio transport; records the bytes written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, b: bytes) -> None:
        self.data += b

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 1) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def make_config(tmp, name: str, fast: bool, cache_extra: str = ""):
    return config_mod.loads(f"""
[device]
kind = "emulated"
path = "{name}.img"
size = "64MiB"
[device.emulator]
preset = "small-test"
[cache]
dram_size = "256KiB"
{cache_extra}
[cache.flash]
region_size = "2MiB"
[server]
metrics_port = 0
accelerate = {"true" if fast else "false"}
item_size_max = {ITEM_SIZE_MAX}
strict_keys = true
""", base_dir=tmp)


class Twin:
    """One server: its cache, store, and a fresh connection per stream."""

    def __init__(self, tmp, name: str, fast: bool, cache_extra: str = ""):
        self.cfg = make_config(tmp, name, fast, cache_extra)
        self.cache = AsyncCache(self.cfg)
        self.store = Store(self.cache, clock=lambda: CLOCK)
        self.server = Server(self.store, self.cfg.server)

    async def feed(self, chunks: list) -> bytes:
        t = Transport()
        conn = Connection(self.server)
        conn.connection_made(t)
        for c in chunks:
            conn.data_received(c)
            await settle(conn)
        conn.eof_received()
        await settle(conn)
        conn.connection_lost(None)
        return bytes(t.data)

    def state(self) -> dict:
        core = self.cache.core
        return {"handler": self.server.handler.counts(), "commands": self.server.command_counts(),
                "server": {k: v for k, v in self.server.counters.items()}, "core": core.counts(),
                "get_samples": sum(core.get_hist.counts), "set_samples": sum(core.set_hist.counts),
                "cas": self.store.ids.cas, "flush_cas": self.store.ids.flush_cas, "foreign": self.store.foreign,
                "locks": len(self.store.locks)}


async def settle(conn: Connection) -> None:
    for _ in range(10_000):
        if not conn.busy:
            return
        await asyncio.sleep(0)
    raise AssertionError("a request never finished")


@pytest.fixture(scope="module", params=["auto", "ring"])
def twins(tmp_path_factory, request):
    """Both modes of flash reads: "auto" (the emulated SSD reads inline, so the C path
    serves single-key gets that read flash) and "ring" (it hands them to Python)."""
    tmp = tmp_path_factory.mktemp("twins")
    loop = asyncio.new_event_loop()
    reads = f'async_reads = "{request.param}"'
    fast, slow = (Twin(tmp, f"fast-{request.param}", True, reads),
                  Twin(tmp, f"slow-{request.param}", False, reads))

    async def open_both():
        await fast.server.open()
        await slow.server.open()
    loop.run_until_complete(open_both())
    assert fast.server.fast is not None and fast.server.fast_state == "on"
    assert slow.server.fast is None
    assert (fast.cache.inline is not None) == (request.param == "auto")
    yield loop, fast, slow
    loop.run_until_complete(fast.store.close())
    loop.run_until_complete(slow.store.close())
    loop.close()


# -- the streams ------------------------------------------------------------------------------
keys = st.sampled_from(KEYS)
values = st.one_of(st.binary(max_size=40), st.binary(min_size=900, max_size=3000),
                   st.sampled_from([b"", b"12", b"\r\n", b"a\r\nb", b"x" * ITEM_SIZE_MAX]))
noreply = st.sampled_from([b"", b" noreply"])
exptime = st.sampled_from([b"0", b"0", b"0", b"00", b"100", b"-1", b"+0"])
flags = st.sampled_from([b"0", b"7", b"4294967295", b"4294967296", b"+5", b"x"])


@st.composite
def command(draw) -> bytes:
    kind = draw(st.sampled_from(["get", "get", "get", "gets", "set", "set", "set", "add", "append", "cas",
                                 "delete", "incr", "touch", "gat", "flush_all", "mg", "ms", "bad", "raw"]))
    if kind in ("get", "gets"):
        ks = draw(st.lists(keys, min_size=1, max_size=4))
        sep = draw(st.sampled_from([b" ", b"  "]))
        return kind.encode() + sep + sep.join(ks) + draw(st.sampled_from([b"\r\n", b"\n", b" \r\n"]))
    if kind in ("set", "add", "append"):
        v = draw(values)
        n = len(v) + draw(st.sampled_from([0, 0, 0, 0, 1, -1])) if v else 0
        if draw(st.integers(0, 20)) == 0:
            n = ITEM_SIZE_MAX + 10                              # over the limit: swallowed
            v = b"y" * n
        return (b"%s %s %s %s %d%s\r\n" % (kind.encode(), draw(keys), draw(flags), draw(exptime), n, draw(noreply))
                + v + b"\r\n")
    if kind == "cas":
        v = draw(values)
        return b"cas %s 0 0 %d %d%s\r\n%s\r\n" % (draw(keys), len(v), draw(st.integers(0, 3)), draw(noreply), v)
    if kind == "delete":
        return b"delete %s%s\r\n" % (draw(keys), draw(noreply))
    if kind == "incr":
        return b"%s %s %d\r\n" % (draw(st.sampled_from([b"incr", b"decr"])), draw(keys), draw(st.integers(0, 9)))
    if kind == "touch":
        return b"touch %s %s\r\n" % (draw(keys), draw(exptime))
    if kind == "gat":
        return b"gat 100 %s\r\n" % draw(keys)
    if kind == "flush_all":
        return b"flush_all\r\n"
    if kind == "mg":
        return b"mg %s v f c t\r\n" % draw(keys)
    if kind == "ms":
        v = draw(values)[:100]
        return b"ms %s %d T0 F3\r\n%s\r\n" % (draw(keys), len(v), v)
    if kind == "bad":
        return draw(st.sampled_from([b"get\r\n", b"set k 0 0\r\n", b"set k 0 0 abc\r\n", b"bogus\r\n", b"\r\n",
                                     b"gets " + b"k" * 251 + b"\r\n", b"get k0\x00junk\r\n"]))
    return draw(st.binary(max_size=30))


@st.composite
def stream(draw) -> list:
    # most streams first store a few keys, so that gets find them (in DRAM, or flash)
    preamble = [b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(v), v)
                for i, (k, v) in enumerate(draw(st.lists(st.tuples(keys, values), max_size=6)))]
    data = b"".join(preamble + draw(st.lists(command(), min_size=1, max_size=25)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        if c > prev:
            out.append(data[prev:c])
            prev = c
    return out


def delta(after: dict, before: dict) -> dict:
    """What changed, counter by counter (so each example stands alone, and shrinks alone)."""
    out = {}
    for k, v in after.items():
        if isinstance(v, dict):
            out[k] = {kk: vv - before[k].get(kk, 0) for kk, vv in v.items() if vv != before[k].get(kk, 0)}
        else:
            out[k] = v - before[k]
    return out


def run_both(twins, chunks: list, fresh: bool = True) -> None:
    """Feed ``chunks`` to both; the replies, the counters' changes and the items must match.
    ``fresh``: empty both caches first, and start both CAS counters at the same value."""
    loop, fast, slow = twins
    if fresh:
        loop.run_until_complete(fast.cache.clear())
        loop.run_until_complete(slow.cache.clear())
        fast.store.ids.cas = slow.store.ids.cas = max(fast.store.ids.cas, slow.store.ids.cas)
        fast.store.ids.flush_cas = slow.store.ids.flush_cas = 0
    before = fast.state(), slow.state()
    a = loop.run_until_complete(fast.feed(chunks))
    b = loop.run_until_complete(slow.feed(chunks))
    assert a == b
    assert delta(fast.state(), before[0]) == delta(slow.state(), before[1])

    async def items(t: Twin) -> list:
        return [await t.cache.get(k) for k in KEYS]
    assert loop.run_until_complete(items(fast)) == loop.run_until_complete(items(slow))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(stream())
def test_fast_path_answers_as_the_python_path(twins, chunks):
    run_both(twins, chunks)


def test_fast_path_serves_dram_hits_and_sets_itself(twins):
    """The C path does take the common requests (not everything handed over)."""
    loop, fast, slow = twins
    before = dict(fast.server.fast.commands())
    run_both(twins, [b"set k0 5 0 3\r\nabc\r\nget k0\r\ngets k0 k0\r\nset k1 0 0 1 noreply\r\nz\r\n"])
    after = fast.server.fast.commands()
    assert after.get(b"set", 0) - before.get(b"set", 0) == 2
    assert after.get(b"get", 0) - before.get(b"get", 0) == 1
    assert after.get(b"gets", 0) - before.get(b"gets", 0) == 1


def test_a_flash_read_in_the_middle_keeps_reply_order(twins):
    """Push k0 out of DRAM (to flash), then a pipeline: DRAM hit, flash read, DRAM hit."""
    filler = b"".join(b"set f%d 0 0 2000\r\n%s\r\n" % (i, bytes([65 + i % 26]) * 2000) for i in range(300))
    loop, fast, slow = twins
    for t in (fast, slow):
        loop.run_until_complete(t.feed([b"set k0 0 0 2\r\nhi\r\n" + filler]))
        assert t.cache.core.dram.peek_expiry(b"k0") is None      # on flash now
    fast.store.ids.cas = slow.store.ids.cas = max(fast.store.ids.cas, slow.store.ids.cas)
    c_gets = fast.server.fast.commands().get(b"get", 0)
    run_both(twins, [b"set k1 0 0 1\r\nA\r\nget k1\r\nget k0\r\nget k1\r\n"], fresh=False)
    assert fast.state()["core"]["hits_flash"] > 0
    # with inline flash reads the C path served the flash read too; with the ring, Python did
    # (and the C path took the last get back)
    served = fast.server.fast.commands().get(b"get", 0) - c_gets
    assert served == (3 if fast.cache.inline is not None else 2)


def test_what_follows_a_partial_request_goes_to_the_parser_even_if_it_looks_like_a_command(twins):
    """The C data_received answers a read only while the parser holds nothing: a data
    block split after its command line is value bytes, even when the next read starts
    with a whole get line (served in C, that get would be answered and the value cut)."""
    loop, fast, slow = twins
    chunks = [b"set kp 0 0 8\r\n", b"get k1\r\n", b"\r\nget kp\r\n",       # the value is "get k1\r\n"
              b"get k", b"p\r\n",                                            # a partial line, then its end
              b"set kq 0 0 2\r\nab", b"\r\nget kq\r\n"]
    before = fast.state(), slow.state()
    c_gets = fast.server.fast.commands().get(b"get", 0)
    a = loop.run_until_complete(fast.feed(chunks))
    b = loop.run_until_complete(slow.feed(chunks))
    assert a == b == (b"STORED\r\nVALUE kp 0 8\r\nget k1\r\n\r\nEND\r\nVALUE kp 0 8\r\nget k1\r\n\r\nEND\r\n"
                      b"STORED\r\nVALUE kq 0 2\r\nab\r\nEND\r\n")
    assert delta(fast.state(), before[0]) == delta(slow.state(), before[1])
    assert fast.server.fast.commands().get(b"get", 0) - c_gets >= 1     # the C path served the last get


def test_a_set_of_a_key_held_by_a_read_modify_write_is_left_to_python(twins):
    loop, fast, slow = twins

    async def held(t: Twin) -> bytes:
        await t.store.locks.acquire(b"k2")
        tr = Transport()
        conn = Connection(t.server)
        conn.connection_made(tr)
        conn.data_received(b"set k2 0 0 1\r\nQ\r\nget k3\r\n")
        assert conn.busy                                      # waiting for the lock, in Python
        t.store.locks.release(b"k2")
        await settle(conn)
        return bytes(tr.data)
    before = fast.state(), slow.state()
    assert loop.run_until_complete(held(fast)) == loop.run_until_complete(held(slow)) == b"STORED\r\nEND\r\n"
    assert delta(fast.state(), before[0]) == delta(slow.state(), before[1])


def test_stats_say_whether_the_fast_path_is_on(twins):
    loop, fast, slow = twins
    a = loop.run_until_complete(fast.feed([b"stats settings\r\n"]))
    b = loop.run_until_complete(slow.feed([b"stats settings\r\n"]))
    assert b"STAT text_fast_path on\r\n" in a
    assert (b"STAT flash_reads inline\r\n" if fast.cache.inline is not None else b"STAT flash_reads ring\r\n") in a
    assert b"STAT text_fast_path off:_server.accelerate_=_false\r\n" in b
    assert b"STAT event_loop " in a


def test_with_write_through_sets_take_the_python_path(tmp_path):
    """With write-through the cache's C path does gets only, so TextPath answers DRAM hits
    and leaves every set to the Python path, which writes it to flash before STORED."""
    t = Twin(tmp_path, "wt", True, cache_extra="write_through = true")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(t.server.open())
        assert t.server.fast is not None and t.server.fast_state.startswith("on for gets"), t.server.fast_state
        hot = t.cache.core.hot
        assert not hot.sets
        out = loop.run_until_complete(t.feed([b"set k 5 0 3\r\nabc\r\nget k\r\n"]))
        assert out == b"STORED\r\nVALUE k 5 3\r\nabc\r\nEND\r\n"
        assert t.server.fast.counters() == {"cmd_get": 1, "cmd_set": 0, "get_hits": 1, "get_misses": 0}  # in C
        assert hot.counters()["sets"] == 0 and t.cache.core.counts()["sets"] == 1          # the set in Python
        assert t.cache.core.lookup_now(b"k") is not None                                    # on flash already
    finally:
        loop.run_until_complete(t.store.close())
        loop.close()


def test_a_connection_the_writer_thread_cannot_take_is_answered_from_the_loop(twins, caplog):
    """Sender.open failing (here: a socket whose fd is not open) is no traceback and no
    lost reply: that connection sends from the loop, and the log and counters say so."""
    from flashcache.server._sender_c import Sender

    class BadSock:
        def fileno(self) -> int:
            return 10_000_000 - 1

    loop, fast, _ = twins
    srv = fast.server
    srv.sender = Sender(high_water=1 << 20)
    errors = srv.counters["server_errors"]
    t = Transport()
    t.get_extra_info = lambda name: BadSock() if name == "socket" else ("127.0.0.1", 1)
    conn = Connection(srv)
    try:
        conn.connection_made(t)
        assert conn.out is None and not srv.outboxes
        conn.data_received(b"set kz 0 0 1\r\nx\r\nget kz\r\n")
        loop.run_until_complete(settle(conn))
        assert bytes(t.data) == b"STORED\r\nVALUE kz 0 1\r\nx\r\nEND\r\n"
        assert srv.counters["server_errors"] == errors + 1
        assert "writer thread cannot take the connection" in caplog.text
    finally:
        conn.connection_lost(None)
        srv.sender.stop()
        srv.sender = None
