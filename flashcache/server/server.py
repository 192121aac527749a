"""The asyncio server: connections, limits, backpressure, signals and shutdown.

Owns sockets and connection state only: bytes go to a ``protocol.Parser``, requests to
``handler.Handler``, replies back in request order (pipelining). With ``server.accelerate``
the common requests (get/gets DRAM hits, plain sets) are answered first by the C
TextPath (flashcache/_server.c), which stops at the first request it cannot finish
without I/O; the parser and handler take it from there, so replies stay in order. Limits: a connection
cap, an idle timeout, per-connection read and write caps (a slow reader stops being read;
see ``Connection``), and the parser's line and length limits. SIGTERM and SIGINT stop
accepting, finish the requests already received, then close the cache with its
warm-restart metadata. The surprise: requests run eagerly inside ``data_received``; only
one that must wait (a flash read, a contended key) is resumed from a future's callback,
and the connection reads nothing more until it is done. Replies go out through the
writer thread (``server.send_thread``, flashcache/server/_sender.c) where the transport
has a socket: the loop queues them and goes on, the thread does the send system calls,
and a connection closes once its replies are sent.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from ._sender_c import CLOSED, ConnBase, Sender, Traffic
from .handler import Handler
from .protocol import Parser, Reply

log = logging.getLogger("flashcache.server")

TOO_MANY = b"ERROR Too many open connections\r\n"


class Connection(ConnBase, asyncio.Protocol):
    """One client. State: the parser (bytes received, not yet run), at most one request
    running (``running``: a suspended coroutine), replies gathered in ``_out`` and
    written once per batch. Reading pauses while the transport holds more than
    ``write_buffer`` reply bytes (the client is not reading) or while a request runs and
    more than ``read_buffer`` request bytes wait.

    ``ConnBase`` (flashcache/server/_sender.c) is its C half: ``data_received`` (the C text
    path's answers for a connection with nothing buffered, running or paused, the rest to
    ``data_received_slow``), ``send_reply`` (the one way replies leave) and the state both
    halves read: ``closing``, ``write_paused``, ``running``, ``parser_idle`` (true only once
    the parser was seen idle, false before it is fed), ``last_active``, ``out``."""

    def __init__(self, server: "Server"):
        self.server = server
        s = server.settings
        self.parser = Parser(s.item_size_max, s.max_line, s.swallow_max, s.strict_keys)
        self.parser_idle = True
        self.handler = server.handler
        self.fast = server.fast
        self.transport: Any = None
        self.peer = "?"
        self._out: list = []
        self._out_bytes = 0
        self._read_paused = False
        self._eof = False
        self.setup(server.fast, server.traffic, server.sender,
                   server.schedule_kick if server.sender is not None else None, s.write_buffer)

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.server
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if srv.draining or len(srv.connections) >= srv.settings.max_connections:
            srv.counters["rejected"] += 1
            transport.write(TOO_MANY)
            transport.close()
            self.closing = True
            return
        transport.set_write_buffer_limits(high=srv.settings.write_buffer)
        sock = transport.get_extra_info("socket")
        if srv.sender is not None and sock is not None:
            try:
                self.out = srv.sender.open(sock.fileno())
            except OSError as e:                # out of descriptors, say: this one sends from the loop
                srv.counters["server_errors"] += 1
                log.warning("conn_error peer=%s reason=%r action=send_from_loop", self.peer,
                            f"writer thread cannot take the connection: {e}")
            else:
                srv.outboxes[self.out] = self
        srv.connections.add(self)
        srv.counters["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.out is not None:                # the peer is gone: drop what is queued
            self.server.sender.release(self.out)
            self.server.outboxes.pop(self.out, None)
            self.out = None
        if exc is not None and not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            log.info("conn_lost peer=%s error=%r", self.peer, str(exc))

    def data_received_slow(self, data: bytes) -> None:
        """What ConnBase.data_received leaves to Python: the bytes its text path did not
        answer (all of them when the connection has something buffered, running or paused,
        or no text path) go to the parser."""
        self.parser_idle = False
        self.parser.feed(data)
        if self.running is None:
            self._process()
        elif self.parser.buffered > self.server.settings.read_buffer:
            self._pause_reading()

    def eof_received(self) -> bool:
        self._eof = True                        # answer what was sent, then close (half-close)
        if self.running is None:
            self._process()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.running is None:
            self._process()

    # -- running requests ------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closing:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self.closing:
            self._read_paused = False
            self.transport.resume_reading()

    def _process(self) -> None:
        """Run buffered requests in order until one must wait, the client stops reading
        our replies, or the buffer holds no complete request; then write the replies."""
        try:
            self._run_buffered()
        finally:
            self.parser_idle = self.parser.idle   # the C data_received may serve the next read

    def _run_buffered(self) -> None:
        parser = self.parser
        run = self.handler.run
        cmds = self.server.commands
        srv = self.server
        fast = self.fast
        while not self.write_paused and not self.closing:
            if fast is not None:
                out = parser.run_fast(fast.serve)
                if out is not None:
                    self._out.append(out)
                    self._out_bytes += len(out)
                if fast.error is not None:
                    self._failed(fast.take_error())
                if self._out_bytes > srv.settings.write_buffer:
                    self._flush()
                    continue
            r = parser.next()
            if r is None:
                break
            if r.__class__ is Reply:
                self._protocol_error(r)
                continue
            name = r.name
            cmds[name] = cmds.get(name, 0) + 1
            if name == b"quit":
                self._close()
                break
            if not self._drive(run[name](r)):
                break                           # suspended: _resume continues from here
            if self._out_bytes > srv.settings.write_buffer:
                self._flush()
        self._flush()
        if self.closing:
            return
        if self.running is None and not self.write_paused:
            if self._eof:
                self._close()
            elif self._read_paused:
                self._resume_reading()
        elif parser.buffered > srv.settings.read_buffer:
            self._pause_reading()

    def _drive(self, coro: Any) -> bool:
        """Advance a request coroutine; True if it finished (its reply is queued)."""
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            self._queue(stop.value)
            return True
        except Exception as e:                  # noqa: BLE001 - a bug or device error: one reply, one log line
            self._failed(e)
            return True
        self.running = coro
        if waiting is None:                     # a bare yield (asyncio.sleep(0))
            asyncio.get_running_loop().call_soon(self._resume)
        else:
            waiting.add_done_callback(self._resume)
        return False

    def _resume(self, _fut: Any = None) -> None:
        coro = self.running
        self.running = None
        if self._drive(coro):                   # even for a closed connection: it may hold a key lock
            self.last_active = time.monotonic()
            self._process()

    def _queue(self, reply: Any) -> None:
        if reply is None:
            return
        if reply.__class__ is bytes:
            self._out.append(reply)
            self._out_bytes += len(reply)
        else:
            self._out += reply
            self._out_bytes += sum(map(len, reply))

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self.server.traffic.bytes_out += len(data)
            if not self.transport.is_closing():
                self.send_reply(data)

    def write_direct(self, data: bytes) -> None:
        """send_reply's way out for a connection without the writer thread."""
        self.transport.write(data)

    def _protocol_error(self, r: Reply) -> None:
        self.server.counters["protocol_errors"] += 1
        if r.line and not r.noreply:
            self._queue(r.line + b"\r\n")
        if r.close:
            log.warning("conn_error peer=%s reason=%r action=close", self.peer, r.reason)
            self._flush()
            self._close()

    def _failed(self, e: Exception) -> None:
        self.server.counters["server_errors"] += 1
        msg = str(e).replace("\r", " ").replace("\n", " ")[:200]
        log.error("conn_error peer=%s reason=%r", self.peer, f"{type(e).__name__}: {msg}")
        self._queue(b"SERVER_ERROR " + msg.encode("utf-8", "replace") + b"\r\n")

    def _close(self) -> None:
        self._flush()
        self.closing = True
        if self.out is not None:
            sender = self.server.sender
            if sender.pending(self.out):        # the transport closes once the replies are sent
                sender.close(self.out)
                return
            sender.release(self.out)            # all sent already: close now
            self.server.outboxes.pop(self.out, None)
            self.out = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _abort(self) -> None:
        """Close now, dropping replies not yet sent (shutdown's drain timed out)."""
        self.closing = True
        if self.out is not None:
            self.server.sender.release(self.out)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _sent(self, kind: int) -> None:
        """The writer thread's news: the queue drained below its low mark, or closed."""
        if kind == CLOSED:
            self.server.outboxes.pop(self.out, None)
            self.out = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
        elif self.write_paused:
            self.resume_writing()

    @property
    def busy(self) -> bool:
        return self.running is not None

    def drain(self) -> None:
        """Shutdown: read nothing more; close once the requests already received are done."""
        self._eof = True
        if not self.closing:
            self._pause_reading()
            if self.running is None and not self.write_paused:
                self._process()


class Server:
    """``flashcache serve``: a Handler on a Store, served on ``settings.listen:port``."""

    def __init__(self, store: Any, settings: Any):
        self.store = store
        self.settings = settings
        self.handler = Handler(store, settings.item_size_max, self)
        self.fast: Any = None                   # the C TextPath, once start() made it
        self.fast_state = "not started"
        self.loop_name = "not started"
        self.connections: set[Connection] = set()
        self.sender: Any = None                 # the writer thread (server.send_thread), once start() made it
        self.send_state = "not started"
        self.outboxes: dict[int, Connection] = {}
        self.traffic = Traffic()                # bytes in and out, counted by the connections (C and Python)
        self.commands: dict[bytes, int] = {}
        self.counters = dict.fromkeys(("connections", "rejected", "protocol_errors", "server_errors"), 0)
        self.draining = False
        self._server: asyncio.AbstractServer | None = None
        self._metrics: Any = None
        self._stop: asyncio.Event | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.address: tuple | None = None
        self.metrics_address: tuple | None = None

    def command_counts(self) -> dict:
        """Requests run by command: the Python path's plus the C text path's."""
        c = dict(self.commands)
        if self.fast is not None:
            for k, v in self.fast.commands().items():
                c[k] = c.get(k, 0) + v
        return c

    @property
    def current(self) -> int:
        return len(self.connections)

    def reset_counters(self) -> None:
        for k in ("protocol_errors", "server_errors", "rejected"):
            self.counters[k] = 0
        self.traffic.bytes_in = self.traffic.bytes_out = 0

    async def start(self) -> None:
        """``open()``, then listen (and serve /metrics)."""
        await self.open()
        loop = asyncio.get_running_loop()
        s = self.settings
        if s.send_thread:
            self.sender = Sender(high_water=s.write_buffer)
            loop.add_reader(self.sender.notify_fd, self._sender_events)
            self.send_state = "on"
        else:
            self.send_state = "off: server.send_thread = false"
        log.info("send_thread=%r", self.send_state)
        self._server = await loop.create_server(lambda: Connection(self), s.listen, s.port,
                                                reuse_address=True, backlog=1024)
        self.address = self._server.sockets[0].getsockname()[:2]
        if s.metrics_port:
            from .metrics import start_metrics
            self._metrics = await start_metrics(self, s.metrics_listen, s.metrics_port)
            self.metrics_address = self._metrics.sockets[0].getsockname()[:2]
        if s.idle_timeout:
            self._idle_timer = loop.call_later(min(s.idle_timeout / 4, 5.0), self._reap_idle)

    async def open(self) -> None:
        """Open the store and make the C text path (``server.accelerate``); no socket yet."""
        loop = asyncio.get_running_loop()
        s = self.settings
        info = await self.store.open()
        log.info("store_open %s", " ".join(f"{k}={v}" for k, v in info.items()))
        self.loop_name = type(loop).__module__.split(".")[0]       # "uvloop" or "asyncio"
        if s.accelerate:
            self.fast, why = self.store.text_path(s.item_size_max, s.strict_keys, batch_max=64 << 10)
            self.fast_state = why if self.fast is not None else f"off: {why}"
        else:
            self.fast_state = "off: server.accelerate = false"
        self.handler.fast = self.fast
        (log.info if self.fast is not None or not s.accelerate else log.warning)(
            "serving event_loop=%s text_fast_path=%r flash_reads=%s", self.loop_name, self.fast_state,
            f"inline ({self.store.cache.inline})" if self.store.cache.inline is not None else "ring")

    def schedule_kick(self) -> None:
        """A reply was queued on the writer thread (the first this loop iteration: the
        Sender keeps that flag): kick it once the iteration's other replies are queued too."""
        asyncio.get_running_loop().call_soon(self.kick)

    def kick(self) -> None:
        """The loop iteration's replies are queued: let the writer thread send them."""
        self.sender.kick()

    def _sender_events(self) -> None:
        for handle, kind in self.sender.events():
            conn = self.outboxes.get(handle)
            if conn is not None:
                conn._sent(kind)

    def _reap_idle(self) -> None:
        s = self.settings
        cutoff = time.monotonic() - s.idle_timeout
        for c in list(self.connections):
            if c.last_active < cutoff and not c.busy:
                log.info("conn_idle peer=%s idle_s=%.0f action=close", c.peer, s.idle_timeout)
                c._close()
        self._idle_timer = asyncio.get_running_loop().call_later(min(s.idle_timeout / 4, 5.0), self._reap_idle)

    def request_stop(self, why: str = "") -> None:
        if self._stop is not None and not self._stop.is_set():
            log.info("stopping reason=%s connections=%d", why or "requested", len(self.connections))
            self._stop.set()

    async def serve_until_stopped(self, signals: bool = True) -> None:
        """Serve until SIGTERM/SIGINT (or ``request_stop``), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self._stop.wait()
        finally:
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, finish the requests received, close connections and the cache."""
        self.draining = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.drain()
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = len(self.connections)
        for c in list(self.connections):
            c._abort()
        if self.sender is not None:
            asyncio.get_running_loop().remove_reader(self.sender.notify_fd)
            self.sender.stop()
        if self._metrics is not None:
            self._metrics.close()
        await asyncio.sleep(0)
        await self.store.close()
        log.info("stopped connections_cut=%d cache=closed (warm-restart metadata written)", left)
