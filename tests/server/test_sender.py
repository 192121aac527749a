"""The server's writer thread (flashcache/server/_sender.c) on real sockets: order kept
through full socket buffers, close only after the last byte, backpressure events, and
handles that cannot alias once their connection is finished."""
from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import pytest

from flashcache.server._sender_c import CLOSED, DRAINED, Sender


def wait_events(s: Sender, want: int, timeout: float = 20.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([s.notify_fd], [], [], 0.1)
        got += s.events()
        if any(k == want for _, k in got):
            return got
    raise AssertionError(f"no event {want} within {timeout} s: {got}")


def reader(sock: socket.socket, out: bytearray, delay: float) -> threading.Thread:
    def run():
        time.sleep(delay)                        # the writer meets a full socket buffer first
        while True:
            b = sock.recv(1 << 16)
            if not b:
                return
            out.extend(b)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@contextlib.contextmanager
def sender_on_a_socketpair(**kw):
    """A Sender and a connected socket pair: the server's end ``a`` (non-blocking, as the
    loop's) and the client's ``b``; all stopped and closed after."""
    a, b = socket.socketpair()
    a.setblocking(False)
    s = Sender(**kw)
    try:
        yield s, a, b
    finally:
        s.stop()
        a.close()
        b.close()


def test_replies_keep_their_order_through_full_buffers_and_close_follows_the_last():
    with sender_on_a_socketpair(high_water=1 << 30) as (s, a, b):
        h = s.open(a.fileno())
        chunks = [bytes([i % 251]) * (1 + (i * 7919) % 20000) for i in range(1500)]   # ~15 MB
        got = bytearray()
        t = reader(b, got, delay=0.3)
        for c in chunks:
            s.send(h, c)
            if c[0] % 50 == 0:
                s.kick()                         # a batch, as the loop does once per iteration
        s.close(h)
        assert (h, CLOSED) in wait_events(s, CLOSED)
        a.close()                                # the loop's close, after CLOSED: the reader sees EOF
        t.join(30)
        assert bytes(got) == b"".join(chunks)
        st = s.stats()
        assert st["would_block"] > 0 and st["bytes_sent"] == len(got) and st["connections"] == 0


def test_backpressure_a_queue_over_high_water_reports_when_it_drained():
    with sender_on_a_socketpair(high_water=256 << 10, low_water=64 << 10) as (s, a, b):
        h = s.open(a.fileno())
        queued = [s.send(h, b"x" * (64 << 10)) for _ in range(32)]     # 2 MiB, nobody reading
        s.kick()
        assert max(queued) > 256 << 10 and s.pending(h) > 256 << 10
        assert not [e for e in s.events() if e[1] == DRAINED]
        got = bytearray()
        t = reader(b, got, delay=0)
        assert (h, DRAINED) in wait_events(s, DRAINED)
        s.close(h)
        wait_events(s, CLOSED)
        a.close()
        t.join(30)
        assert len(got) == 32 * (64 << 10)


def test_release_drops_the_queue_and_a_finished_handle_never_aliases():
    with sender_on_a_socketpair(high_water=1 << 20) as (s, a, b):
        h = s.open(a.fileno())
        for _ in range(200):
            s.send(h, b"y" * 65536)              # more than the socket takes: some stays queued
        s.kick()
        s.release(h)
        assert (h, CLOSED) in wait_events(s, CLOSED)
        assert s.send(h, b"late") == 0 and s.pending(h) == 0      # dropped, not sent to anyone
        h2 = s.open(a.fileno())                  # the same slot again, another generation
        assert h2 != h
        s.send(h2, b"fresh")
        s.kick()
        s.close(h2)
        got = bytearray()
        t = reader(b, got, delay=0)              # the socket is still full of h's first sends
        wait_events(s, CLOSED)
        a.close()
        t.join(30)
        assert got.endswith(b"fresh") and b"late" not in got and len(got) < 200 * 65536 + 5


def test_bad_arguments_and_use_after_stop_are_refused():
    with pytest.raises(ValueError):
        Sender(high_water=0)
    s = Sender(high_water=1024)
    with pytest.raises(ValueError):
        s.open(-1)
    with pytest.raises(OSError):
        s.open(10_000_000 - 1)                   # not an open fd
    s.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        s.send(0, b"x")
