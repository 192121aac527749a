"""Asynchronous reads through a device's own ring and eventfd."""
from __future__ import annotations

import os
import select

import pytest

from flashcache.devices.async_io import RingReader
from flashcache.devices.emulated import open_emulated
from flashcache.devices.file import FileDevice
from flashcache.devices.uring import UringDevice
from flashcache.emulator import Geometry
from flashcache.errors import DeviceError


def wait_all(reader, tokens):
    got = {}
    while len(got) < len(tokens):
        select.select([reader.eventfd], [], [], 5)
        for tok, data in reader.reap():
            got[tok] = data
    return [got[t] for t in tokens]


@pytest.mark.parametrize("direct", [False, True])
def test_uring_device_reads_complete_through_the_eventfd(tmp_path, direct):
    p = str(tmp_path / "d.img")
    dev = UringDevice(p, 8 << 20, direct=direct)
    try:
        blobs = [os.urandom(4096 * (1 + i % 3)) for i in range(40)]
        offs = [i * 16384 for i in range(40)]
        dev.write_many([(o, b, None) for o, b in zip(offs, blobs)])
        r = dev.async_reader(depth=32)
        try:
            before = dev.counters.bytes_read
            first = r.submit([(o, len(b)) for o, b in zip(offs[:32], blobs[:32])])
            assert r.free == 0 and r.inflight == 32
            with pytest.raises(ValueError, match="33 reads submitted with room for 0|1 reads submitted with room for 0"):
                r.submit([(0, 4096)])
            out = wait_all(r, first)
            rest = r.submit([(o, len(b)) for o, b in zip(offs[32:], blobs[32:])])
            out += wait_all(r, rest)
            assert out == blobs
            assert dev.counters.bytes_read - before == sum(map(len, blobs))
            with pytest.raises(ValueError, match="aligned|multiple"):
                r.submit([(100, 4096)])
        finally:
            r.close()
    finally:
        dev.close()


def test_emulated_device_reads_asynchronously(tmp_path):
    g = Geometry(capacity_bytes=16 << 20, op=0.12, ru_bytes=256 << 10, handles=("II",) * 2)
    dev = open_emulated(str(tmp_path / "e.img"), g)
    try:
        dev.write(8192, b"x" * 4096, dev.open_stream("a"))
        r = dev.async_reader()
        try:
            assert wait_all(r, r.submit([(8192, 4096), (0, 4096)])) == [b"x" * 4096, bytes(4096)]
            with pytest.raises(ValueError):
                r.submit([(16 << 20, 4096)])             # beyond the namespace
        finally:
            r.close()
    finally:
        dev.close()


def test_psync_device_says_why_it_has_no_async_reads(tmp_path):
    dev = FileDevice(str(tmp_path / "p.img"), 1 << 20)
    try:
        assert dev.async_reader() is None
        assert "no io_uring ring" in dev.async_unavailable_reason()
    finally:
        dev.close()


def test_a_failed_read_is_an_error_for_that_request(tmp_path):
    p = tmp_path / "f.img"
    p.write_bytes(bytes(8192))
    fd = os.open(p, os.O_WRONLY)                          # reads of a write-only fd fail: EBADF
    try:
        r = RingReader(fd, path=str(p))
        try:
            (tok,) = r.submit([(0, 4096)])
            (res,) = wait_all(r, [tok])
            assert isinstance(res, DeviceError) and "read of 4096 bytes at offset 0 failed" in str(res)
        finally:
            r.close()
    finally:
        os.close(fd)
