"""Real clients against `flashcache serve` over loopback: pymemcache for every text
command (and raw_command for gat/gats and the meta commands), and the libmemcached
command-line tools (Debian's libmemcached-tools: memccp, memccat, memcrm, memcstat,
memcflush; upstream names memcp, memcat, ...)."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheIllegalInputError

from .conftest import request


@pytest.fixture
def mc(server):
    c = Client(("127.0.0.1", server.port), connect_timeout=5, timeout=5, default_noreply=False)
    yield c
    c.close()


def test_set_get_binary_flags_and_many(mc, server):
    value = bytes(range(256)) * 40
    assert mc.set("bin", value, flags=0xFFFFFFFF)
    assert mc.get("bin") == value
    assert request(server.port, b"get bin\r\n", b"END\r\n").startswith(b"VALUE bin 4294967295 10240\r\n")
    assert mc.set_many({"m1": b"1", "m2": b"22"}) == []
    assert mc.get_many(["m1", "m2", "nope"]) == {"m1": b"1", "m2": b"22"}


def test_noreply_sets_are_applied(server):
    c = Client(("127.0.0.1", server.port), default_noreply=True, timeout=5)
    c.set("nr", b"v")
    c.delete("nr2")
    assert c.get("nr") == b"v"
    c.close()


def test_add_replace_append_prepend(mc):
    mc.delete("arp")
    assert not mc.replace("arp", b"x")
    assert mc.add("arp", b"b")
    assert not mc.add("arp", b"z")
    assert mc.append("arp", b"c") and mc.prepend("arp", b"a")
    assert mc.get("arp") == b"abc"
    assert mc.replace("arp", b"new")
    assert mc.get("arp") == b"new"


def test_gets_and_cas(mc):
    mc.set("c", b"1")
    v, token = mc.gets("c")
    assert v == b"1" and int(token) > 0
    assert mc.cas("c", b"2", token)
    assert mc.cas("c", b"3", token) is False               # EXISTS: the token is stale
    assert mc.get("c") == b"2"
    assert mc.cas("nocas", b"x", b"1") is None              # NOT_FOUND
    _, t2 = mc.gets("c")
    assert int(t2) > int(token)                              # 64-bit CAS uniques increase


def test_delete_incr_decr_touch(mc):
    mc.set("n", b"41")
    assert mc.incr("n", 1) == 42
    assert mc.decr("n", 50) == 0
    assert mc.incr("missing-n", 1) is None
    assert mc.touch("n", 100) and not mc.touch("missing-n", 100)
    assert mc.delete("n") and not mc.delete("n")
    mc.set("s", b"abc")
    with pytest.raises(MemcacheClientError, match="non-numeric"):
        mc.incr("s", 1)


def test_gat_gats_and_expiry(mc, server):
    mc.set("g", b"v", expire=100)
    assert request(server.port, b"gat 1 g\r\n", b"END\r\n") == b"VALUE g 0 1\r\nv\r\nEND\r\n"
    out = request(server.port, b"gats 1 g\r\n", b"END\r\n")
    assert out.startswith(b"VALUE g 0 1 ") and out.endswith(b"\r\nv\r\nEND\r\n")
    deadline = time.monotonic() + 5
    while mc.get("g") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mc.get("g") is None                                 # gat 1 set a 1-second TTL
    mc.set("neg", b"v", expire=-1)
    assert mc.get("neg") is None
    mc.set("abs", b"v", expire=int(time.time()) + 3600)       # beyond 30 days: a Unix time
    assert mc.get("abs") == b"v"


def test_flush_all_now_and_delayed(mc):
    mc.set("f1", b"v")
    assert mc.flush_all()
    assert mc.get("f1") is None
    mc.set("f2", b"v")
    assert mc.flush_all(delay=1)
    assert mc.get("f2") == b"v"
    deadline = time.monotonic() + 5
    while mc.get("f2") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mc.get("f2") is None
    mc.set("f3", b"after")
    assert mc.get("f3") == b"after"


def test_stats_version_verbosity_quit(mc, server):
    mc.get("stats-probe")                   # counted even on its own, whatever ran before
    st = mc.stats()
    assert st[b"cmd_get"] > 0 and b"curr_connections" in st
    assert st[b"bytes_read"] > 0 and st[b"bytes_written"] > 0
    assert st[b"send_thread_sends"] > 0 and st[b"send_thread_wakes"] > 0       # the writer thread sent them
    flash = mc.stats("flash")
    assert flash[b"placement:bighash"].startswith(b"on:pid=") and b"device_waf_since_open" in flash
    for eng in (b"bighash", b"blockcache"):            # each engine's own counters, named by the router
        assert b"engine:" + eng + b":inserts" in flash or b"engine:" + eng + b":lookups" in flash, sorted(flash)
    for sub in ("settings", "items", "slabs"):
        assert mc.stats(sub)
    settings = mc.stats("settings")         # how requests are served, said where an operator looks
    assert settings[b"send_thread"] == b"on" and settings[b"flash_reads"] == b"inline"
    assert settings[b"text_fast_path"] == b"on"
    assert mc.version().startswith(b"1.6")
    assert mc.raw_command(b"verbosity 1", b"\r\n") == b"OK"
    assert request(server.port, b"quit\r\n", b"\r\n") == b""


def test_key_and_size_limits(mc, server):
    with pytest.raises(MemcacheIllegalInputError):
        mc.set("k" * 251, b"v")                                # pymemcache checks too; the server's reply:
    assert request(server.port, b"get " + b"k" * 251 + b"\r\n", b"\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    big = b"x" * (1 << 20)
    assert mc.set("big", big) and mc.get("big") == big           # exactly 1 MiB: memcached's -I default
    out = request(server.port, b"set big2 0 0 %d\r\n" % ((1 << 20) + 1) + b"y" * ((1 << 20) + 1) + b"\r\nmn\r\n",
                  b"MN\r\n")
    assert out == b"SERVER_ERROR object too large for cache\r\nMN\r\n"


def test_meta_commands_with_the_flags_clients_use(mc, server):
    p = server.port
    assert request(p, b"ms mk 3 F7 T100 c\r\nabc\r\n", b"\r\n").startswith(b"HD c")
    out = request(p, b"mg mk v k f t c s Oxy\r\n", b"abc\r\n")
    head = out.split(b"\r\n")[0].split()
    assert head[:2] == [b"VA", b"3"] and b"kmk" in head and b"f7" in head and b"s3" in head and b"Oxy" in head
    assert any(t.startswith(b"t") and 98 <= int(t[1:]) <= 100 for t in head)
    cas = next(t[1:] for t in head if t.startswith(b"c"))
    assert request(p, b"ms mk 1 C%s MA\r\nd\r\n" % cas, b"\r\n") == b"HD\r\n"     # append with CAS
    assert request(p, b"ms mk 1 C%s\r\nz\r\n" % cas, b"\r\n") == b"EX\r\n"        # stale CAS
    assert request(p, b"mg mk v\r\n", b"abcd\r\n") == b"VA 4\r\nabcd\r\n"
    assert request(p, b"ms mk 1 ME\r\nz\r\nms mk2 1 ME q\r\nz\r\nmn\r\n", b"MN\r\n") == b"NS\r\nMN\r\n"
    assert request(p, b"mg nope v q\r\nmg nope k\r\nmn\r\n", b"MN\r\n") == b"EN knope\r\nMN\r\n"
    assert request(p, b"mg lease N30 v\r\nmg lease v\r\n", b"Z\r\n\r\n") == b"VA 0 W\r\n\r\nVA 0 Z\r\n\r\n"
    assert request(p, b"md mk I T30\r\nmg mk v\r\n", b"\r\nabcd\r\n") == b"HD\r\nVA 4 X W\r\nabcd\r\n"
    assert request(p, b"ma ctr N0 J5 v\r\nma ctr MD D2 v\r\nma ctr q\r\nmn\r\n", b"MN\r\n") == \
        b"VA 1\r\n5\r\nVA 1\r\n3\r\nMN\r\n"
    assert request(p, b"md ctr q\r\nmd ctr\r\n", b"\r\n") == b"NF\r\n"
    assert request(p, b"me nope\r\n", b"\r\n") == b"EN\r\n"


LIBMC = shutil.which("memccp") or shutil.which("memcp")


@pytest.mark.skipif(LIBMC is None, reason="libmemcached-tools not installed (make test installs it)")
def test_libmemcached_tools(server, tmp_path):
    def tool(name: str) -> str:
        return shutil.which(f"memc{name[3:]}") or shutil.which(name)

    srv = f"--servers=127.0.0.1:{server.port}"
    f = tmp_path / "blob.bin"
    f.write_bytes(bytes(range(256)) * 100)
    run = lambda *a: subprocess.run(a, capture_output=True, timeout=30)  # noqa: E731
    assert run(tool("memcp"), srv, str(f)).returncode == 0
    got = run(tool("memcat"), srv, "blob.bin")
    assert got.returncode == 0 and got.stdout == f.read_bytes() + b"\n"      # memcat ends with a newline
    st = run(tool("memstat"), srv)
    assert st.returncode == 0 and b"curr_connections" in st.stdout and b"cmd_get" in st.stdout
    assert run(tool("memrm"), srv, "blob.bin").returncode == 0
    assert run(tool("memcat"), srv, "blob.bin").returncode != 0
    assert run(tool("memcp"), srv, str(f)).returncode == 0
    assert run(tool("memflush"), srv).returncode == 0
    assert run(tool("memcat"), srv, "blob.bin").returncode != 0
