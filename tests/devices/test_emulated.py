"""The emulated FDP SSD as a device: NVMe commands in, the FTL's accounting and real bytes out."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

from flashcache import nvme
from flashcache.devices.emulated import open_emulated, state_path_for
from flashcache.emulator import Geometry, preset
from flashcache.errors import FormatError, NvmeError

SMALL = Geometry(capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, handles=("II",) * 4, lba_size=4096)


@pytest.fixture
def dev(tmp_path):
    d = open_emulated(str(tmp_path / "ssd.img"), SMALL)
    yield d
    d.close()


def test_it_is_an_fdp_drive_with_handles_and_waf(dev):
    info = dev.info()
    assert info["fdp_supported"] and info["fdp_enabled"] and info["placement"] == "on"
    assert info["handles"] == 4 and info["placement_identifiers"] == [0, 1, 2, 3]
    assert info["handle_types"] == ["initially isolated"] * 4
    assert info["reclaim_unit_bytes"] == 256 << 10 and info["capacity_bytes"] == 16 << 20
    assert info["waf"] == "available" and dev.size == 16 << 20 and dev.block_size == 4096
    a, b = dev.open_stream("bighash"), dev.open_stream("blockcache")
    assert (a.pid, b.pid) == (1, 2) and a.placement == b.placement == "on"


def test_bytes_round_trip_and_trim_reads_zeros(dev):
    s = dev.open_stream("x")
    data = os.urandom(64 << 10)
    dev.write(1 << 20, data, s)
    assert dev.read(1 << 20, 64 << 10) == data
    dev.trim(1 << 20, 32 << 10)
    assert dev.read(1 << 20, 64 << 10) == bytes(32 << 10) + data[32 << 10:]
    assert dev.ftl.mapped_pages == 8


def test_writes_land_on_their_handle_and_waf_comes_from_the_stats_log(dev):
    s1, s2 = dev.open_stream("a"), dev.open_stream("b")
    dev.write(0, bytes(8192), s1)
    dev.write(8192, bytes(4096), s2)
    dev.write(12288, bytes(4096))            # no stream: handle 0, no directive
    hc = dev.ftl.handle_counters()
    assert [h["hbmw"] for h in hc] == [4096, 8192, 4096, 0]
    snap = dev.waf_snapshot()
    assert (snap.hbmw, snap.mbmw) == (16384, 16384)
    st = dev.fdp_stats()                      # the same numbers through Get Log Page 0x22
    assert (st.hbmw, st.mbmw, st.mbe) == (snap.hbmw, snap.mbmw, snap.mbe)


def test_random_overwrites_show_gc_in_mbmw_and_mbe(dev):
    s = dev.open_stream("a")
    blk = bytes(4096)
    n = dev.size // 4096
    dev.write_many([(i * 4096, blk, s) for i in range(n)])
    before = dev.waf_snapshot()
    rng = random.Random(1)
    for _ in range(4):
        dev.write_many([(rng.randrange(n) * 4096, blk, s) for _ in range(n)])
    after = dev.waf_snapshot()
    waf = after.waf_since(before)
    assert waf > 2.0                             # 12 % OP, uniform random: ~4.5
    assert after.mbe > before.mbe
    assert after.mbmw - after.hbmw == dev.ftl.stats()["gc_copies_bytes"]


def test_ruh_status_and_update_with_not_fully_written_event(dev):
    s = dev.open_stream("a")
    dev.set_events(s.handle, [nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN])
    dev.write(0, bytes(3 * 4096), s)
    st = {d.pid: d for d in dev.ruh_status().descriptors}
    assert st[s.pid].ruamw == SMALL.ru_pages - 3 and st[s.pid].ruhid == s.handle
    dev.ruh_update([s.pid])
    assert {d.pid: d for d in dev.ruh_status().descriptors}[s.pid].ruamw == SMALL.ru_pages
    evs = dev.events(host=True).events
    assert [(e.type, e.pid) for e in evs] == [(nvme.FDP_EVENT_RU_NOT_FULLY_WRITTEN, s.pid)]
    with pytest.raises(NvmeError, match="Invalid Placement Handle List"):
        dev.ruh_update([9])


def test_invalid_placement_identifier_falls_back_to_handle_0_with_an_event(dev):
    dev.set_events(0, [nvme.FDP_EVENT_INVALID_PID])
    t = dev.transport
    t.io(nvme.write_cmd(1, 0, 1, dtype=nvme.DTYPE_DATA_PLACEMENT, dspec=77), bytearray(4096))
    assert dev.ftl.handle_counters()[0]["hbmw"] == 4096
    evs = dev.events(host=True).events
    assert [(e.type, e.pid) for e in evs] == [(nvme.FDP_EVENT_INVALID_PID, 77)]


def test_gc_relocations_are_media_reallocated_events_when_enabled(dev):
    dev.set_events(0, [nvme.FDP_EVENT_MEDIA_REALLOCATED])
    s = dev.open_stream("a")
    rng = np.random.default_rng(2)
    n = dev.size // 4096
    dev.write(0, bytes(dev.size), s)
    for lpn in rng.integers(0, n, 3 * n).tolist():
        dev.transport.ftl.write(lpn, 1)
    evs = dev.events(host=False).events
    assert evs and all(e.type == nvme.FDP_EVENT_MEDIA_REALLOCATED for e in evs)


def test_bad_commands_get_the_status_a_drive_returns(dev):
    t = dev.transport
    with pytest.raises(NvmeError, match="LBA Out of Range"):
        t.io(nvme.read_cmd(1, dev.size // 4096 - 1, 2), bytearray(8192))
    with pytest.raises(NvmeError, match="Invalid Field in Command"):
        t.io(nvme.write_cmd(1, 0, 2), bytearray(4096))          # buffer does not match NLB
    with pytest.raises(NvmeError, match="Invalid Namespace or Format"):
        t.io(nvme.read_cmd(2, 0, 1), bytearray(4096))
    with pytest.raises(ValueError, match="aligned|multiple"):
        dev.read(100, 4096)                                     # misaligned: the Device refuses


def test_conventional_mode_reports_placement_off_and_waf_from_the_ftl(tmp_path):
    g = Geometry(capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, fdp=False)
    d = open_emulated(str(tmp_path / "c.img"), g)
    try:
        s = d.open_stream("bighash")
        assert s.pid is None and s.placement.startswith("off: FDP is disabled in endurance group 1")
        assert d.info()["waf"] == "available"
        assert "FDP disabled" in d.waf_source()
        d.write(0, bytes(8192), s)
        assert d.waf_snapshot().hbmw == 8192
        with pytest.raises(NvmeError, match="FDP Disabled"):
            d.fdp_stats()                                        # as on a real drive
    finally:
        d.close()


def test_placement_false_in_config_is_reported(tmp_path):
    d = open_emulated(str(tmp_path / "p.img"), SMALL, placement=False)
    try:
        assert d.open_stream("x").placement == "off: placement disabled by configuration (device.placement = false)"
    finally:
        d.close()


def test_state_and_data_persist_across_close_and_open(tmp_path):
    path = str(tmp_path / "ssd.img")
    d = open_emulated(path, SMALL)
    s = d.open_stream("a")
    data = os.urandom(1 << 20)
    for _ in range(30):
        d.write(0, data, s)
    snap = d.waf_snapshot()
    d.close()
    assert os.path.exists(state_path_for(path))
    d = open_emulated(path, SMALL)
    try:
        assert d.waf_snapshot() == snap
        assert d.read(0, 1 << 20) == data
    finally:
        d.close()
    other = Geometry(capacity_bytes=16 << 20, op=0.2, ru_bytes=256 << 10, handles=("II",) * 4)
    with pytest.raises(FormatError) as ei:
        open_emulated(path, other)
    assert str(ei.value) == (f"{state_path_for(path)}: saved for another emulated SSD geometry (saved vs "
                             "configured: {'op': (0.12, 0.2)}); use the old settings, or set format = true in "
                             "the [device] table of the config to start this emulated SSD afresh (its data is lost)")
    d = open_emulated(path, other, format=True)                  # format: a fresh drive
    try:
        assert d.waf_snapshot().hbmw == 0
    finally:
        d.close()


def test_foreign_file_is_refused_without_format(tmp_path):
    p = tmp_path / "foreign.img"
    p.write_bytes(b"precious data" * 1000)
    with pytest.raises(FormatError, match="will not overwrite it"):
        open_emulated(str(p), SMALL)
    assert p.read_bytes().startswith(b"precious data")


def test_512_byte_lbas(tmp_path):
    g = preset("qemu-like")          # 1 GiB, sparse
    d = open_emulated(str(tmp_path / "q.img"), g)
    try:
        assert d.block_size == 512 and d.info()["lba_size"] == 512
        d.write(512, b"x" * 512, d.open_stream("a"))
        assert d.read(0, 1024) == bytes(512) + b"x" * 512
        assert d.ftl.handle_counters()[1]["hbmw"] == 4096       # one 4 KiB mapping unit programmed
    finally:
        d.close()


def test_two_reclaim_groups_encode_the_group_in_the_pid(tmp_path):
    g = Geometry(capacity_bytes=32 << 20, op=0.25, ru_bytes=256 << 10, nrg=2, handles=("II",) * 2)
    d = open_emulated(str(tmp_path / "rg.img"), g)
    try:
        info = d.info()
        assert info["reclaim_groups"] == 2
        # RGIF = 1: the group is the PID's top bit; PH-major order as QEMU lists them
        assert info["placement_identifiers"] == [0, 0x8000, 1, 0x8001]
        t = d.transport
        t.io(nvme.write_cmd(1, 0, 2, dtype=nvme.DTYPE_DATA_PLACEMENT, dspec=0x8001), bytearray(8192))
        free = [d.ftl.free_rus(0), d.ftl.free_rus(1)]
        assert free[1] == free[0] - 1                 # group 1 opened a reclaim unit, group 0 did not
        assert d.ftl.handle_counters()[1]["hbmw"] == 8192
        st = {x.pid: x for x in d.ruh_status().descriptors}
        assert st[0x8001].ruamw == g.ru_pages - 2 and st[1].ruamw == g.ru_pages
    finally:
        d.close()


def test_fast_path_and_command_path_agree(tmp_path):
    """NvmeDevice reads and writes through the controller's rw() fast path; the same I/O as
    NVMe commands must land the same bytes, handles and statuses."""
    a = open_emulated(str(tmp_path / "a.img"), SMALL)
    b = open_emulated(str(tmp_path / "b.img"), SMALL)
    try:
        sa, sb = a.open_stream("x"), b.open_stream("x")
        rng = random.Random(3)
        for _ in range(200):
            off = rng.randrange(SMALL.exported_pages - 4) * 4096
            data = os.urandom(4096 * rng.randint(1, 4))
            a.write(off, data, sa)                                         # fast path
            b.transport.io(nvme.write_cmd(1, off // 4096, len(data) // 4096, dtype=nvme.DTYPE_DATA_PLACEMENT,
                                          dspec=sb.pid), bytearray(data))  # command path
            assert a.read(off, len(data)) == data
        assert a.ftl.stats() == b.ftl.stats()
        assert a.read(0, SMALL.capacity_bytes) == b.read(0, SMALL.capacity_bytes)
        with pytest.raises(NvmeError, match="LBA Out of Range"):
            a.transport.rw(False, [SMALL.exported_pages], [4096], [-1], 12)
        with pytest.raises(NvmeError, match="Invalid Field"):
            a.transport.rw(True, [0], [100], [-1], 12, [b"x" * 100])
    finally:
        a.close()
        b.close()


def test_batched_reads_go_out_in_one_ring_submission(dev):
    s = dev.open_stream("a")
    blobs = [os.urandom(4096 * (1 + i % 3)) for i in range(20)]
    offs = [i * 65536 for i in range(20)]
    dev.write_many([(o, b, s) for o, b in zip(offs, blobs)])
    assert dev.read_many([(o, len(b)) for o, b in zip(offs, blobs)]) == blobs
    from flashcache.uring import Ring
    assert isinstance(dev.controller._ring, Ring)                  # a ring served the batch
    with pytest.raises(NvmeError, match="LBA Out of Range"):
        dev.transport.rw(False, [0, SMALL.exported_pages], [4096, 4096], [-1, -1], 12)


def test_single_reads_take_the_c_path_with_the_same_answers_and_counts(dev):
    """Reads need no FTL accounting, so a single read is one C call on the backing file;
    what it returns, refuses and counts is what the NVMe Read path does."""
    assert dev._c_reads is not None and dev.read == dev._c_reads.read
    data = bytes(range(256)) * 32
    dev.write(8192, data)
    assert dev.read(8192, 8192) == data
    assert dev.read(1 << 20, 4096) == bytes(4096)                 # never written: zeros
    with pytest.raises(ValueError, match="not aligned"):
        dev.read(100, 4096)
    with pytest.raises(ValueError, match="ends past"):
        dev.read(dev.size, 4096)
    st = dev.stats()
    assert (st["reads"], st["bytes_read"]) == (2, 12288)
    h, m, _ = dev.ftl.counters()
    assert h == m == 8192                                         # reads program nothing


def test_reads_on_a_closed_device_are_refused(tmp_path):
    d = open_emulated(str(tmp_path / "c.img"), preset("small-test"))
    d.close()
    from flashcache.errors import ClosedError
    with pytest.raises(ClosedError):
        d.read(0, 4096)


@pytest.mark.parametrize("fdp", [True, False])
def test_single_writes_take_the_c_path_with_the_same_accounting_and_counts(tmp_path, fdp):
    """A single write is one C call (results.c's Reader with set_program): the FTL is told
    of it as EmulatedController.rw tells it, on the stream's handle, under the controller's
    lock. The same writes on a twin held to the Python write (the whole NVMe Write path)
    must leave the same FTL (mapping, handles, GC), bytes, counters and events."""
    import types

    g = Geometry(capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, handles=("II",) * 4, lba_size=4096, fdp=fdp)
    a = open_emulated(str(tmp_path / "a.img"), g)
    b = open_emulated(str(tmp_path / "b.img"), g)
    b.write = types.MethodType(type(b).write, b)                              # the Python form
    try:
        assert a.write == a._c_reads.write
        if fdp:
            for d in (a, b):                                                  # GC moves show as events
                d.set_events(0, [nvme.FDP_EVENT_MEDIA_REALLOCATED])
        streams = [(d.open_stream("bighash"), d.open_stream("blockcache")) for d in (a, b)]
        rng = random.Random(7)
        pages = g.exported_pages
        for i in range(3 * pages):                                            # enough to make GC run
            npg = 1 if rng.random() < 0.9 else rng.randint(2, 8)
            off = rng.randrange(pages - npg) * 4096
            data = rng.randbytes(npg * 4096)
            which = rng.choice((0, 1, None))
            for d, (s1, s2) in zip((a, b), streams):
                s = None if which is None else (s1, s2)[which]
                d.write(off, bytearray(data) if i % 5 == 0 else data, s)
        assert a._c_reads.writes == 3 * pages and b._c_reads.writes == 0
        assert a.ftl.stats() == b.ftl.stats() and a.ftl.stats()["gc_copies_bytes"] > 0
        assert a.ftl.handle_counters() == b.ftl.handle_counters()
        sa, sb = a.ftl.state()[1], b.ftl.state()[1]
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
        assert a.waf_snapshot() == b.waf_snapshot()
        assert {**a.stats(), "path": "", "emulator": None} == {**b.stats(), "path": "", "emulator": None}
        assert a.stats()["bytes_written_by_stream"] == b.stats()["bytes_written_by_stream"]
        if fdp:
            ea, eb = a.events(host=False).events, b.events(host=False).events
            assert len(ea) > 0 and [(e.type, e.type_specific) for e in ea] == [(e.type, e.type_specific) for e in eb]
        assert a.read(0, g.capacity_bytes) == b.read(0, g.capacity_bytes)
        # what the C path leaves to the Python write: the same errors, nothing accounted
        before = a.ftl.stats()
        with pytest.raises(ValueError, match="not aligned"):
            a.write(100, bytes(4096))
        with pytest.raises(ValueError, match="ends past"):
            a.write(a.size, bytes(4096))
        assert a.ftl.stats() == before
    finally:
        a.close()
        b.close()
    from flashcache.errors import ClosedError
    with pytest.raises(ClosedError):
        a.write(0, bytes(4096))


def test_a_c_write_waits_for_the_controller_lock_like_the_python_path(dev):
    """The C write takes the controller's lock without waiting; held by another thread, the
    write goes to the Python path, which waits for it: accounted once, after the holder."""
    import threading

    s = dev.open_stream("a")
    lock = dev.controller.lock
    done = threading.Event()
    lock.acquire()
    t = threading.Thread(target=lambda: (dev.write(0, bytes(4096), s), done.set()))
    t.start()
    try:
        assert not done.wait(0.2)                     # blocked behind the holder
        assert dev.ftl.handle_counters()[s.pid]["hbmw"] == 0
    finally:
        lock.release()
    t.join(10)
    assert done.is_set() and dev.ftl.handle_counters()[s.pid]["hbmw"] == 4096
    assert dev._c_reads.writes == 0 and dev.stats()["writes"] == 1
    dev.write(4096, bytes(4096), s)                   # free again: C
    assert dev._c_reads.writes == 1 and dev.ftl.handle_counters()[s.pid]["hbmw"] == 8192
