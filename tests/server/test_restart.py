"""Lifecycle over real processes: SIGTERM drains and closes the cache warm, a restart
serves the same items (flags, CAS order kept); the /metrics endpoint; the CLI's rules."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

from pymemcache.client.base import Client

from .conftest import ROOT, ServerProc, free_port, request, write_config


def test_warm_restart_through_sigterm_serves_the_same_items(tmp_path):
    port, mport = free_port(), free_port()
    cfg = write_config(tmp_path / "s.toml", port, mport, dram="1MiB")      # most items live on flash
    srv = ServerProc(cfg, port).start()
    items = {f"w{i}".encode(): os.urandom(100 if i % 10 else 20_000) for i in range(600)}
    c = Client(("127.0.0.1", port), timeout=10, default_noreply=False)
    for i, (k, v) in enumerate(items.items()):
        assert c.set(k, v, flags=i)
    _, cas_before = c.gets(b"w1")
    c.close()
    assert srv.stop(signal.SIGTERM) == 0
    log = srv.log()
    assert "stopping reason=SIGTERM" in log and "warm-restart metadata written" in log

    srv = ServerProc(cfg, port).start()
    try:
        c = Client(("127.0.0.1", port), timeout=10, default_noreply=False)
        st = c.stats("flash")
        assert st[b"start"].startswith(b"warm")
        got = c.get_many(list(items))
        assert got == items                                      # every item back, no wrong value
        for i, k in enumerate(list(items)[:50]):
            assert request(port, b"get " + k + b"\r\n", b"END\r\n").startswith(b"VALUE %s %d " % (k, i))
        c.set(b"w1", b"new")
        _, cas_after = c.gets(b"w1")
        assert int(cas_after) > int(cas_before)                  # CAS never reused across a restart
        c.close()
        assert "store_open saved_state=True" in srv.log()        # the CAS high-water mark came back
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def test_metrics_endpoint(server):
    request(server.port, b"set m 0 0 1\r\nx\r\nget m\r\nbogus\r\n", b"ERROR\r\n")
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    for name in ("flashcache_server_connections ", 'flashcache_server_commands_total{command="get"}',
                 "flashcache_server_protocol_errors_total", "flashcache_server_read_bytes_total",
                 "flashcache_server_written_bytes_total", "flashcache_gets_total", "flashcache_placement_enabled",
                 "flashcache_device_write_amplification"):
        assert name in body, name
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/nope", timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_a_non_loopback_address_needs_the_explicit_key(tmp_path):
    cfg = write_config(tmp_path / "s.toml", free_port())
    r = subprocess.run([sys.executable, "-m", "flashcache.cli", "serve", "-c", str(cfg), "--listen", "0.0.0.0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert 'server.listen = "0.0.0.0" is not a loopback address: set server.allow_remote = true' in r.stderr
