"""Bad and hostile input over real sockets: wrong lengths, huge lengths, endless lines,
binary junk, half-closed connections, random bytes from hypothesis; the connection cap,
the idle timeout, a reader that never reads, and 1,000 connections at once. Each gets
the right reply or a close, the server keeps serving others, its memory stays bounded
and no traceback reaches its log."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from .conftest import exchange, request, start_server

REPLY_LINE = re.compile(rb"^(ERROR|CLIENT_ERROR [ -~]+|SERVER_ERROR object too large for cache|STORED|NOT_STORED|EXISTS|"
                        rb"NOT_FOUND|DELETED|TOUCHED|OK|END|RESET|MN|(EN|NF|NS|EX|HD)( .*)?|VA \d+( .*)?|"
                        rb"VALUE \S+ \d+ \d+( \d+)?|STAT .*|VERSION .*|\d+|ME .*)$")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def still_serving(port: int) -> None:
    assert request(port, b"set alive 0 0 2\r\nok\r\nget alive\r\n", b"END\r\n") == \
        b"STORED\r\nVALUE alive 0 2\r\nok\r\nEND\r\n"


def only_reply_lines(out: bytes) -> bool:
    """Every line is a memcached reply line, except the data blocks that VALUE/VA announce."""
    lines = out.split(b"\r\n")
    i = 0
    while i < len(lines) - 1:
        ln = lines[i]
        m = re.match(rb"^(?:VALUE \S+ \d+ (\d+)(?: \d+)?|VA (\d+).*)$", ln)
        if m:
            n = int(m.group(1) or m.group(2))
            rest = b"\r\n".join(lines[i + 1:])
            if len(rest) < n + 2:
                return False
            lines = [b""] * (i + 1) + rest[n + 2:].split(b"\r\n")
            i += 1
            continue
        if ln and not REPLY_LINE.match(ln):
            return False
        i += 1
    return lines[-1] == b""


def test_wrong_byte_counts_and_missing_crlf(server):
    assert exchange(server.port, b"set a 0 0 5\r\nab\r\n") == b""                  # short: waits, then EOF closes
    assert exchange(server.port, b"set a 0 0 1\r\nab\r\n") == b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"
    assert exchange(server.port, b"set a 0 0 2\r\nabXY") == b"CLIENT_ERROR bad data chunk\r\n"
    still_serving(server.port)


def test_huge_declared_length_gets_the_error_and_a_close(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"set k 0 0 2147483000\r\n")
        got = s.recv(100)
        assert got == b"SERVER_ERROR object too large for cache\r\n"
        assert s.recv(100) == b""                                                 # closed
    still_serving(server.port)


def test_endless_line_is_cut_off_and_memory_does_not_grow(server):
    before = rss_bytes(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        try:
            for _ in range(4096):                                                 # up to 64 MiB, no newline
                s.sendall(b"x" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(5)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    assert rss_bytes(server.proc.pid) < before + (16 << 20)
    assert "reason='a " in server.log() and "action=close" in server.log()       # one structured line
    still_serving(server.port)


def test_binary_junk_and_half_close(server):
    junk = bytes(range(256)) * 8 + b"\r\n\x00\xff\r\n"
    out = exchange(server.port, junk)
    assert out == b"" or only_reply_lines(out)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"get a")
        s.shutdown(socket.SHUT_WR)                                                # half-close mid-line
        assert s.recv(100) == b""
    assert exchange(server.port, b"set hc 0 0 1\r\nx\r\nget hc\r\n") == b"STORED\r\nVALUE hc 0 1\r\nx\r\nEND\r\n"
    still_serving(server.port)


def fuzz_one(port: int, data: bytes) -> None:
    out = exchange(port, data, timeout=10)
    assert only_reply_lines(out), (data, out)


def test_fuzz_random_bytes(server):
    n = int(os.environ.get("FLASHCACHE_FUZZ_EXAMPLES", "1000"))
    commands = st.sampled_from([b"get ", b"gets ", b"set ", b"add ", b"cas ", b"incr ", b"delete ", b"mg ", b"ms ",
                                b"md ", b"ma ", b"touch ", b"gat ", b"flush_all", b"stats", b"verbosity ", b""])
    atoms = st.one_of(st.binary(max_size=64), commands, st.sampled_from([b"\r\n", b" ", b"0", b"1", b"-1", b"k",
                                                                          b"4294967296", b"99999999999", b"noreply"]))

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(atoms, max_size=12).map(b"".join))
    def run(data):
        fuzz_one(server.port, data)
    run()
    still_serving(server.port)
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_fuzz_ten_thousand(server, monkeypatch):
    monkeypatch.setenv("FLASHCACHE_FUZZ_EXAMPLES", "10000")
    test_fuzz_random_bytes(server)


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A server with a 20-connection cap and a 1-second idle timeout."""
    srv = start_server(tmp_path_factory.mktemp("tight"),
                       server_extra='max_connections = 20\nidle_timeout = "1s"\nwrite_buffer = "256KiB"')
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def connections_now(port: int) -> int:
    out = request(port, b"stats\r\n", b"END\r\n")
    return int(re.search(rb"STAT curr_connections (\d+)", out).group(1))


def test_connection_limit(tight):
    deadline = time.monotonic() + 5
    while connections_now(tight.port) > 1 and time.monotonic() < deadline:     # earlier clients' closes land
        time.sleep(0.05)
    held = [socket.create_connection(("127.0.0.1", tight.port), timeout=5) for _ in range(20)]
    try:
        for s in held:
            s.sendall(b"mn\r\n")
            assert s.recv(10) == b"MN\r\n"
        with socket.create_connection(("127.0.0.1", tight.port), timeout=5) as extra:
            assert extra.recv(100) == b"ERROR Too many open connections\r\n"
            assert extra.recv(100) == b""
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            still_serving(tight.port)
            break
        except AssertionError:
            time.sleep(0.1)
    still_serving(tight.port)


def test_idle_timeout(tight):
    with socket.create_connection(("127.0.0.1", tight.port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""                                                  # closed by the server
        assert time.monotonic() - t0 >= 0.9


def test_slow_reader_is_not_read_and_memory_stays_bounded(tight):
    with socket.create_connection(("127.0.0.1", tight.port), timeout=5) as w:
        w.sendall(b"set big 0 0 524288\r\n" + b"b" * 524288 + b"\r\n")
        assert w.recv(100) == b"STORED\r\n"
    before = rss_bytes(tight.proc.pid)
    s = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent = 0
    try:
        for _ in range(200_000):                      # up to 2 million gets of 512 KiB: a terabyte of replies
            try:
                sent += s.send(b"get big\r\n" * 10)
            except BlockingIOError:
                break                                                             # the server stopped reading us
    finally:
        grown = rss_bytes(tight.proc.pid) - before
        still_serving(tight.port)
        s.close()
    assert sent < 200_000 * 90                                                    # backpressure reached the client
    assert grown < 64 << 20, grown


def test_a_thousand_connections_mixed_get_set(tmp_path):
    srv = start_server(tmp_path, dram="8MiB")
    try:
        before = rss_bytes(srv.proc.pid)
        errors: list = []

        async def client(i: int) -> None:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            try:
                for j in range(10):
                    key = b"c%d-%d" % (i, j % 3)
                    val = os.urandom(1 + (i * 7 + j) % 2000)
                    w.write(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(val), val, key))
                    want = b"STORED\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(val), val)
                    got = await asyncio.wait_for(r.readexactly(len(want)), 30)
                    if got != want:
                        errors.append((i, j))
            finally:
                w.close()

        async def main() -> None:
            await asyncio.gather(*(client(i) for i in range(1000)))
        asyncio.run(main())
        assert errors == []
        # the bound: the 8 MiB DRAM tier plus per-connection buffers, far below 1000 x the 1 MiB caps
        assert rss_bytes(srv.proc.pid) < before + (96 << 20)
        still_serving(srv.port)
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log()
