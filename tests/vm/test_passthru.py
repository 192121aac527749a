"""The passthrough device against the real Linux NVMe driver, inside tools/nvme-vm.

QEMU's FDP model: 8 MiB reclaim units, 8 initially isolated handles, one reclaim group,
no garbage collection (MBMW = HBMW except when a handle leaves a partly written RU).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from flashcache import nvme
from flashcache.devices.nvme_passthru import PassthroughTransport, open_nvme_device
from flashcache.errors import DeviceInUseError, NvmeError
from tests.devices.helpers import in_child, outcome

from .conftest import BLOCK, CTRL, NS, VM, fdp_only, nofdp_only

pytestmark = pytest.mark.vm


@pytest.fixture
def dev():
    d = open_nvme_device(NS)
    yield d
    d.close()


def test_one_process_owns_the_namespace(dev):
    """The cache's device locks /dev/ng0n1: a second open, in this process or another, is
    refused naming this one; `flashcache nvme id` still reads the drive beside it."""
    me = os.getpid()
    with pytest.raises(DeviceInUseError, match=rf"^{NS}: is already open in this process \(pid {me}\)"):
        open_nvme_device(NS)
    out = subprocess.run(
        [sys.executable, "-c", "from flashcache.devices.nvme_passthru import open_nvme_device\n"
         "from flashcache.errors import DeviceInUseError\n"
         f"try:\n    open_nvme_device({NS!r})\nexcept DeviceInUseError as e:\n    print('PIDS', list(e.pids), e)\n"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert f"PIDS [{me}] {NS}: is in use by process {me}" in out.stdout, out.stdout + out.stderr
    assert "LBA size" in _cli("nvme", "id", NS)


def test_a_forked_child_refuses_the_namespace_and_the_parent_carries_on(dev):
    s = dev.open_stream("f")
    data = os.urandom(dev.block_size * 8)
    dev.write(0, data, s)
    got = in_child(lambda: [outcome(lambda: dev.read(0, dev.block_size)),
                            outcome(lambda: dev.write(0, bytes(dev.block_size), s)),
                            outcome(lambda: dev.read_many([(0, dev.block_size)])), outcome(dev.close)])
    assert all(g.startswith("ForkedError: ") for g in got[:3]) and got[3] == "returned None", got
    assert dev.read(0, len(data)) == data
    dev.write(0, bytes(len(data)), s)


def test_identify_geometry(dev):
    lba = 4096 if VM == "fdp4k" else 512
    assert dev.lba_size == lba == dev.block_size
    with open("/sys/block/nvme0n1/size") as f:
        assert dev.size == int(f.read()) * 512
    with open("/sys/block/nvme0n1/queue/max_hw_sectors_kb") as f:
        assert dev.max_io == int(f.read()) * 1024
    assert "QEMU" in dev.id_ctrl.mn
    assert dev.id_ctrl.fdps == (VM != "nofdp")


def test_data_integrity_patterns(dev):
    bs = dev.block_size
    rng = __import__("random").Random(7)
    spots = sorted(rng.sample(range(0, dev.size // bs - 64), 40))
    blobs = {s: os.urandom(bs * rng.randint(1, 64)) for s in spots}
    # non-overlapping: keep only spots whose blob fits before the next spot
    keep = {}
    last_end = -1
    for s in spots:
        if s * bs > last_end:
            keep[s] = blobs[s]
            last_end = s * bs + len(blobs[s])
    stream = dev.open_stream("t")
    dev.write_many([(s * bs, b, stream) for s, b in keep.items()])
    got = dev.read_many([(s * bs, len(b)) for s, b in keep.items()])
    assert got == list(keep.values())
    for s, b in list(keep.items())[:5]:
        assert dev.read(s * bs, len(b)) == b


def test_large_io_is_split_by_mdts(dev):
    n = dev.max_io * 3 + dev.block_size * 5
    data = os.urandom(n)
    dev.write(dev.block_size * 16, data, dev.open_stream("big"))
    assert dev.read(dev.block_size * 16, n) == data


def test_trim_deallocates(dev):
    bs = dev.block_size
    dev.write(0, b"\xab" * (bs * 8))
    dev.trim(0, bs * 8)
    # What a deallocated block reads as is what the namespace's DLFEAT bits 2:0 promise
    assert dev.id_ns.dlfeat & 7 == 1, f"DLFEAT {dev.id_ns.dlfeat:#x}: QEMU should promise zeroes"
    assert dev.read(0, bs * 8) == bytes(bs * 8)


def test_out_of_range_is_rejected_before_the_drive(dev):
    with pytest.raises(ValueError, match="ends past the device size"):
        dev.read(dev.size, dev.block_size)


def test_out_of_range_status_from_the_drive():
    t = PassthroughTransport(NS, use_ring=True)
    try:
        ns = nvme.IdentifyNamespace.parse(__import__("flashcache.devices.nvme", fromlist=["x"]).admin_buf(
            t, nvme.identify_namespace(t.nsid), 4096))
        buf = bytearray(ns.lba_size)
        with pytest.raises(NvmeError) as ei:
            t.io(nvme.read_cmd(t.nsid, ns.nsze, 1), buf)
        assert ei.value.status_name == "LBA Out of Range"
    finally:
        t.close()


@fdp_only()
def test_placement_streams_move_only_their_handle(dev):
    assert dev.fdp.placement_off is None, dev.fdp.placement_off
    assert len(dev.fdp.pids) == 8
    a, b = dev.open_stream("bighash"), dev.open_stream("blockcache")
    assert (a.handle, b.handle) == (1, 2) and a.pid != b.pid and a.placement == "on"
    before = {d.pid: d.ruamw for d in dev.ruh_status().descriptors}
    bs = dev.block_size
    dev.write(bs * 1000, os.urandom(bs * 24), a)
    dev.write(bs * 5000, os.urandom(bs * 40), b)
    after = {d.pid: d.ruamw for d in dev.ruh_status().descriptors}
    blocks = lambda n: n * bs // dev.lba_size
    for pid in before:
        want = blocks(24) if pid == a.pid else blocks(40) if pid == b.pid else 0
        assert before[pid] - after[pid] == want, (pid, before[pid], after[pid])


@fdp_only()
def test_out_of_handles_says_so(dev):
    streams = [dev.open_stream(f"s{i}") for i in range(9)]
    assert [s.handle for s in streams[:7]] == list(range(1, 8))
    assert streams[7].pid is None and streams[7].placement.startswith("off: out of placement handles")
    assert dev.stats()["placement"]["s7"].startswith("off: out of placement handles")


@fdp_only()
def test_hbmw_grows_by_bytes_written(dev):
    s = dev.open_stream("w")
    before = dev.waf_snapshot()
    n = dev.block_size * 64
    dev.write(dev.block_size * 2048, os.urandom(n), s)
    after = dev.waf_snapshot()
    assert after.hbmw - before.hbmw == n
    assert after.mbmw - before.mbmw == n


@fdp_only()
def test_ruh_update_counts_unwritten_remainder_and_logs_event(dev):
    s = dev.open_stream("u")
    dev.set_events(s.handle, [nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN], True)
    bs = dev.block_size
    dev.write(bs * 4096, os.urandom(bs * 10), s)
    ruamw = {d.pid: d.ruamw for d in dev.ruh_status().descriptors}[s.pid]
    before = dev.waf_snapshot()
    dev.ruh_update([s.pid])
    after = dev.waf_snapshot()
    assert after.mbmw - before.mbmw == ruamw * dev.lba_size
    assert after.hbmw == before.hbmw
    ev = dev.events(host=True)
    mine = [e for e in ev.events if e.type == nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN and e.pid == s.pid]
    assert mine, ev
    fresh = {d.pid: d.ruamw for d in dev.ruh_status().descriptors}[s.pid]
    assert fresh == dev.fdp.runs_bytes // dev.lba_size


@nofdp_only()
def test_no_fdp_placement_off_with_reason_and_io_still_correct(dev):
    s = dev.open_stream("bighash")
    assert s.pid is None
    assert s.placement == "off: the controller does not support FDP (Identify Controller CTRATT bit 19 is 0)"
    assert dev.waf_unavailable_reason().startswith("the device has no FDP")
    data = os.urandom(dev.block_size * 8)
    dev.write(0, data, s)
    assert dev.read(0, len(data)) == data
    from prometheus_client import CollectorRegistry
    from flashcache.metrics import DeviceCollector
    reg = CollectorRegistry()
    reg.register(DeviceCollector(dev, "vm"))
    assert reg.get_sample_value("flashcache_device_placement_enabled", {
        "device": "vm", "path": NS, "stream": "bighash", "pid": "",
        "reason": "the controller does not support FDP (Identify Controller CTRATT bit 19 is 0)"}) == 0


def _without_privilege(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` with every capability dropped (setpriv): the kernel then treats the
    caller as unprivileged (no CAP_SYS_ADMIN) while it keeps owner access to the node.
    A non-root uid would do the same for the NVMe rules, but this VM's Python lives under
    /root (mode 0700 on the host), which only uid 0 can read."""
    return subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--ambient-caps=-all", "--no-new-privs",
         sys.executable, "-c", "import ctypes, os\n"
         "assert open('/proc/self/status').read().split('CapEff:')[1].split()[0] == '0000000000000000'\n" + code],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_unprivileged_user_io_works_waf_unavailable():
    out = _without_privilege(
        "from flashcache.devices.nvme_passthru import open_nvme_device\n"
        "d = open_nvme_device('/dev/ng0n1')\n"
        "s = d.open_stream('x')\n"
        "d.write(0, b'\\x5a' * d.block_size * 4, s)\n"
        "assert d.read(0, d.block_size * 4) == b'\\x5a' * d.block_size * 4\n"
        "print('IO-OK'); print('WAF:', d.waf_unavailable_reason()); print('PLACEMENT:', s.placement)\n")
    assert "IO-OK" in out.stdout, out.stderr
    if VM != "nofdp":
        assert "WAF: needs CAP_SYS_ADMIN" in out.stdout, out.stdout


def _nvme_cli(*args):
    out = subprocess.run(["nvme", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _ours(*args):
    from flashcache.cli import main
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["nvme", "fdp", *args, "-o", "json", "--json-flavor", "2.3"]) == 0
    return json.loads(buf.getvalue())


@fdp_only()
@pytest.mark.skipif(not shutil.which("nvme"), reason="nvme-cli is not installed (tools/bootstrap.sh nvme-cli)")
@pytest.mark.parametrize("cmd, dev", [("configs", CTRL), ("stats", CTRL), ("usage", CTRL), ("status", BLOCK)])
def test_json_matches_nvme_cli(cmd, dev):
    extra = ["-e", "1"] if cmd != "status" else []
    assert _ours(cmd, dev, *extra) == _nvme_cli("fdp", cmd, dev, *extra, "-o", "json")


def _cli(*args) -> str:
    from flashcache.cli import main
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(list(args)) == 0
    return buf.getvalue()


def test_cli_id_summary():
    out = _cli("nvme", "id", NS)
    assert "QEMU NVMe Ctrl" in out and "LBA size" in out
    if VM == "nofdp":
        assert "FDP          not supported" in out and "placement    off:" in out
    else:
        assert "FDP          supported, enabled, endurance group 1" in out
        assert "8 (8 initially isolated)" in out and "reclaim      1 group(s), unit 8 MiB" in out


@fdp_only()
def test_cli_waf_interval_reports_each_window():
    import threading
    d = open_nvme_device(NS)
    s = d.open_stream("w")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            d.write((i % 512) * d.block_size * 8, bytes(d.block_size * 8), s)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = _cli("nvme", "waf", CTRL, "--interval", "0.5", "--count", "2", "-e", "1")
    finally:
        stop.set()
        t.join()
        d.close()
    rows = [line.split() for line in out.splitlines()[1:]]
    # QEMU has no GC: media = host bytes, except that a write ending exactly at a reclaim
    # unit's end is counted twice in MBMW (a QEMU quirk, docs/nvme-fdp.md 5.3)
    assert len(rows) == 2, out
    for r in rows:
        assert float(r[1]) > 0 and 1.0 <= float(r[3]) < 1.01, out


def test_cache_refuses_foreign_data_then_runs_async_on_the_namespace():
    """The cache on the namespace through config: foreign data is refused without
    `format = true`; then AsyncCache's flash reads go through its own passthrough ring."""
    import asyncio

    from flashcache import config
    from flashcache.async_cache import AsyncCache
    from flashcache.errors import FormatError

    def conf(fmt: bool):
        return config.loads(f"""
[device]
kind = "nvme"
path = "{NS}"
format = {"true" if fmt else "false"}
[cache]
dram_size = "64KiB"
[cache.flash]
region_size = "4MiB"
""", "vm.toml")

    d = open_nvme_device(NS)
    try:
        d.write(0, b"not a cache".ljust(d.block_size, b"!"))
    finally:
        d.close()
    with pytest.raises(FormatError, match="will not overwrite it"):
        AsyncCache(conf(False))

    async def main():
        async with AsyncCache(conf(True)) as c:
            vals = {b"k%d" % i: bytes([i % 256]) * (300 if i % 5 else 40_000) for i in range(400)}
            await c.set_many(vals)
            got = await asyncio.gather(*(c.get(k) for k in vals))
            st = c.stats()
            a = st["async_io"]
            assert a["mode"] == "io_uring eventfd", a
            assert a["reads"] > 100 and a["batches"] < a["reads"]
            assert all(g in (vals[k], None) for k, g in zip(vals, got))
            assert sum(g == vals[k] for k, g in zip(vals, got)) > 350
    asyncio.run(main())
