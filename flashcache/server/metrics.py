"""The Prometheus endpoint: the cache's metrics plus the server's, over HTTP on its own port.

Owns the server's metric names and a minimal HTTP/1.0 responder on the event loop (no
thread: a scrape reads the cache's stats on the loop that changes them). Serves
``GET /metrics`` (text format 0.0.4) and answers anything else 404; a request head is
read up to 8 KiB within 5 s, then the connection closes.
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

HEAD_MAX = 8192
HEAD_TIMEOUT_S = 5.0


class ServerCollector(Collector):
    """Connections, commands by type, protocol errors and bytes in/out, read at scrape time."""

    def __init__(self, server: Any):
        self.server = server

    def collect(self) -> Iterable:
        s = self.server
        c = s.counters
        g = GaugeMetricFamily("flashcache_server_connections", "client connections open now")
        g.add_metric([], len(s.connections))
        yield g
        yield CounterMetricFamily("flashcache_server_connections_accepted", "client connections accepted",
                                  value=c["connections"])
        yield CounterMetricFamily("flashcache_server_connections_rejected",
                                  "connections refused at the connection limit", value=c["rejected"])
        cmds = CounterMetricFamily("flashcache_server_commands", "requests run, by command", labels=["command"])
        for name, n in sorted(s.command_counts().items()):
            cmds.add_metric([name.decode("ascii", "replace")], n)
        yield cmds
        yield CounterMetricFamily("flashcache_server_protocol_errors",
                                  "requests answered with a protocol error (or cut off)", value=c["protocol_errors"])
        yield CounterMetricFamily("flashcache_server_errors", "requests that failed inside the server",
                                  value=c["server_errors"])
        yield CounterMetricFamily("flashcache_server_read_bytes", "bytes received from clients", value=s.traffic.bytes_in)
        yield CounterMetricFamily("flashcache_server_written_bytes", "bytes sent to clients", value=s.traffic.bytes_out)
        k = s.handler.counts()
        hits = CounterMetricFamily("flashcache_server_get_results", "keys asked by get/gets/mg, by result",
                                   labels=["result"])
        hits.add_metric(["hit"], k["get_hits"])
        hits.add_metric(["miss"], k["get_misses"])
        yield hits


async def start_metrics(server: Any, host: str, port: int) -> asyncio.AbstractServer:
    """Serve ``/metrics`` for ``server`` (its store's registry plus a ServerCollector)."""
    registry = server.store.registry
    collector = ServerCollector(server)
    registry.register(collector)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body = generate_latest(registry)
                status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body = b"flashcache: the metrics are at /metrics\n"
                status, ctype = b"404 Not Found", b"text/plain; charset=utf-8"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype +
                         b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=HEAD_MAX, reuse_address=True)
