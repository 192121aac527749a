"""Scale-out: three flashcache servers behind twemproxy (Debian's nutcracker) with ketama
consistent hashing. Keys spread over all three, every value reads back through the
proxy, and a server SIGTERMed and restarted warm serves its items again, with no wrong
value served meanwhile. `make test` installs nutcracker; without it the test skips."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

from .conftest import ServerProc, free_port, write_config

NUTCRACKER = shutil.which("nutcracker")
pytestmark = pytest.mark.skipif(NUTCRACKER is None, reason="nutcracker not installed (make test installs it)")


def proxy_config(path, listen_port: int, ports: list) -> None:
    servers = "\n".join(f"    - 127.0.0.1:{p}:1 fc{i}" for i, p in enumerate(ports))
    path.write_text(f"""flashcache:
  listen: 127.0.0.1:{listen_port}
  hash: fnv1a_64
  distribution: ketama
  timeout: 2000
  server_retry_timeout: 200
  server_failure_limit: 1
  auto_eject_hosts: false
  servers:
{servers}
""")


def test_three_servers_behind_nutcracker(tmp_path):
    servers = []
    for i in range(3):
        d = tmp_path / f"s{i}"
        d.mkdir()
        port = free_port()
        servers.append(ServerProc(write_config(d / "s.toml", port, dram="1MiB"), port).start())
    pport, sport = free_port(), free_port()
    proxy_config(tmp_path / "nutcracker.yml", pport, [s.port for s in servers])
    proxy = subprocess.Popen([NUTCRACKER, "-c", str(tmp_path / "nutcracker.yml"), "-s", str(sport),
                              "-o", str(tmp_path / "nutcracker.log")])
    try:
        c = Client(("127.0.0.1", pport), timeout=5, connect_timeout=5, default_noreply=False)
        deadline = time.monotonic() + 10
        while True:
            try:
                c.set(b"probe", b"1")
                break
            except (MemcacheError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        items = {b"key:%d" % i: os.urandom(50 + i % 3000) for i in range(900)}
        for k, v in items.items():
            assert c.set(k, v)
        assert c.get_many(list(items)) == items
        per_server = []
        for s in servers:
            d = Client(("127.0.0.1", s.port), timeout=5, default_noreply=False)
            per_server.append(len(d.get_many(list(items))))
            d.close()
        assert all(n > 100 for n in per_server) and sum(per_server) == len(items), per_server

        victim = servers[1]
        assert victim.stop(signal.SIGTERM) == 0
        wrong = 0
        for k, v in items.items():                     # while it is down: a value is right, or not served
            try:
                got = c.get(k)
            except (MemcacheError, OSError):
                c.close()
                continue
            if got is not None and got != v:
                wrong += 1
        assert wrong == 0
        victim.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                got = c.get_many(list(items))
            except (MemcacheError, OSError):
                c.close()
                got = {}
            if got == items or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == items                            # its items are back: a warm restart
        c.close()
    finally:
        proxy.terminate()
        proxy.wait(10)
        for s in servers:
            s.stop()
    for s in servers:
        assert "Traceback" not in s.log()
