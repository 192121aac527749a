"""The FTL of the emulated FDP SSD: where the bytes would sit in NAND, and what GC costs.

Owns the mapping state (numpy arrays shared with the C core in ftl.c), the FDP counters
(HBMW, MBMW, MBE, also per handle) and their state as arrays (the device writes the file); it stores no user data (the
emulated device keeps that in a sparse file). The surprise: a write to a handle never
fails for lack of space as long as the geometry is valid, because GC runs inside the
write that needs a fresh reclaim unit, exactly as on a drive; that is where the media
writes beyond the host's come from.
"""
from __future__ import annotations

import errno
from typing import Any

import numpy as np

from ..errors import FlashCacheError, FormatError
from .geometry import POLICIES, Geometry
from ._ftl_c import ffi, lib

STATE_VERSION = 1
UNMAPPED = 0xFFFFFFFF
_CHECKS = {
    -1: "sum of RU valid counts differs from the number of mapped logical pages",
    -2: "a page beyond an RU's write pointer is mapped",
    -3: "an RU's valid count differs from its mapped pages",
    -4: "L2P and P2L disagree (a page mapped twice or lost)",
    -5: "MBMW differs from HBMW + GC copies",
    -6: "the free RU list or count is wrong",
}
# name -> (dtype, length as a function of the geometry)
_ARRAYS = {
    "l2p": (np.uint32, lambda g: g.exported_pages),
    "p2l": (np.uint32, lambda g: g.physical_pages),
    "p_ruh": (np.uint16, lambda g: g.physical_pages),
    "ru_valid": (np.uint32, lambda g: g.nru),
    "ru_wp": (np.uint32, lambda g: g.nru),
    "ru_state": (np.uint8, lambda g: g.nru),
    "ru_owner": (np.uint16, lambda g: g.nru),
    "ruh_pi": (np.uint8, lambda g: g.nruh),
    "ru_stamp": (np.uint64, lambda g: g.nru),
    "ru_seq": (np.uint64, lambda g: g.nru),
    "ru_next": (np.int32, lambda g: g.nru),
    "ru_prev": (np.int32, lambda g: g.nru),
    "bucket_head": (np.int32, lambda g: g.nrg * (g.ru_pages + 1)),
    "min_bucket": (np.uint32, lambda g: g.nrg),
    "free_head": (np.int32, lambda g: g.nrg),
    "free_count": (np.uint32, lambda g: g.nrg),
    "host_open": (np.int32, lambda g: g.nrg * g.nruh),
    "gc_open": (np.int32, lambda g: g.nrg * (g.nruh + 1)),
    "fifo": (np.int32, lambda g: g.nru),
    "fifo_head": (np.uint32, lambda g: g.nrg),
    "fifo_len": (np.uint32, lambda g: g.nrg),
    "ruh_host": (np.uint64, lambda g: g.nruh),
    "ruh_media": (np.uint64, lambda g: g.nruh),
}
_SCALARS = ("host_pages", "gc_pages", "erases", "mapped", "clock", "reloc_n", "gc_runs", "closes")


class FtlError(FlashCacheError):
    """The FTL cannot do what was asked (no spare left, a broken invariant, bad state)."""


class Ftl:
    """A page-mapped FTL with reclaim units, groups, handles and GC (see module docstring).

    Logical pages (``lpn``) are ``page_bytes`` each; ``ruh`` is a reclaim unit handle
    index and ``rg`` a reclaim group. ``debug=True`` checks every invariant after each GC
    (slow: O(capacity) per GC; for tests).
    """

    def __init__(self, geometry: Geometry, *, debug: bool = False, relocation_log: int = 0):
        g = self.geometry = geometry
        self.page_bytes = g.page_bytes
        self.exported_pages = g.exported_pages
        self.ru_pages = g.ru_pages
        self.nruh = g.nruh
        self.nrg = g.nrg
        self._c = ffi.new("fc_ftl *")
        c = self._c
        c.ru_pages, c.nrg, c.nruh, c.ru_per_rg, c.nru = g.ru_pages, g.nrg, g.nruh, g.ru_per_rg, g.nru
        c.exported_pages = g.exported_pages
        c.gc_low = g.gc_reserve_rus
        c.policy = POLICIES.index(g.gc_policy)
        c.debug = int(debug)
        self.arrays: dict[str, np.ndarray] = {}
        for name, (dt, n) in _ARRAYS.items():
            self._attach(name, np.zeros(max(1, n(g)), dtype=dt))
        self._attach("reloc", np.zeros(max(1, relocation_log), dtype=np.uint64))
        c.reloc_cap = relocation_log
        self._reloc_taken = 0
        lib.fc_ftl_reset(c)
        self.arrays["ruh_pi"][:] = [t == 2 for t in g.handle_types()]

    def _attach(self, name: str, arr: np.ndarray) -> None:
        self.arrays[name] = arr
        setattr(self._c, name, ffi.cast(f"{ffi.getctype(ffi.typeof(getattr(self._c, name)))}",
                                        ffi.from_buffer(arr)))

    # -- host commands ----------------------------------------------------------------------
    def write(self, lpn: int, npages: int, ruh: int = 0, rg: int = 0) -> None:
        """Program ``npages`` logical pages from ``lpn`` through handle ``ruh``."""
        self._check(lib.fc_ftl_write(self._c, lpn, npages, rg, ruh), "write", lpn, npages, ruh, rg)

    def write_hook(self) -> tuple[int, int]:
        """(address of the C ``fc_ftl_write``, address of this FTL's state): what a C write
        path (results.c's ``Reader.set_program``) calls to account a write exactly as
        ``write`` does. Valid while this object lives: the caller keeps a reference."""
        return (int(ffi.cast("uintptr_t", ffi.addressof(lib, "fc_ftl_write"))),
                int(ffi.cast("uintptr_t", self._c)))

    def write_pages(self, lpns: np.ndarray, ruh: int = 0, rg: int = 0) -> None:
        """Program many single pages (a uint32 array of lpns) in one C call."""
        a = np.ascontiguousarray(lpns, dtype=np.uint32)
        self._check(lib.fc_ftl_write_pages(self._c, ffi.from_buffer("uint32_t[]", a), len(a), rg, ruh),
                    "write", int(a.min()) if len(a) else 0, int(a.max()) + 1 - int(a.min()) if len(a) else 0, ruh, rg)

    def trim(self, lpn: int, npages: int) -> None:
        """Deallocate logical pages: their physical copies become invalid (free spare)."""
        self._check(lib.fc_ftl_trim(self._c, lpn, npages), "trim", lpn, npages)

    def ruh_update(self, ruh: int, rg: int = 0) -> int:
        """Close the handle's open RU; returns the pages left unwritten in it."""
        r = lib.fc_ftl_ruh_update(self._c, rg, ruh)
        self._check(r, "RUH update", 0, 0, ruh, rg)
        return int(r)

    def ru_remaining(self, ruh: int, rg: int = 0) -> int:
        """Pages the handle can still write before it needs a fresh RU."""
        r = lib.fc_ftl_ru_remaining(self._c, rg, ruh)
        self._check(r, "RU remaining", 0, 0, ruh, rg)
        return int(r)

    def _check(self, r: int, what: str, a: int, n: int, ruh: int = 0, rg: int = 0) -> None:
        if self._c.check_error:
            raise FtlError(f"emulated FTL invariant broken after GC: {_CHECKS[self._c.check_error]}")
        if r >= 0:
            return
        if r == -errno.ERANGE:
            raise FtlError(f"emulated FTL {what}: pages {a}..{a + n - 1} are beyond the "
                           f"{self.exported_pages} exported pages")
        if r == -errno.EINVAL:
            raise FtlError(f"emulated FTL {what}: handle {ruh} or reclaim group {rg} out of range "
                           f"({self.nruh} handles, {self.nrg} groups)")
        if r == -errno.ENOSPC:
            raise FtlError(f"emulated FTL {what}: no reclaim unit can be freed (every RU is fully valid); "
                           "the geometry has too little spare for this reclaim group")
        raise FtlError(f"emulated FTL {what}: error {r}")

    # -- reporting --------------------------------------------------------------------------
    def counters(self) -> tuple[int, int, int]:
        """(HBMW, MBMW, MBE) in bytes, as the FDP Statistics log reports them."""
        c, pb = self._c, self.page_bytes
        return c.host_pages * pb, (c.host_pages + c.gc_pages) * pb, c.erases * self.geometry.ru_bytes

    def handle_counters(self) -> list[dict[str, int]]:
        """Per handle: host bytes written through it and media bytes of its data."""
        pb = self.page_bytes
        return [{"hbmw": int(h) * pb, "mbmw": int(m) * pb}
                for h, m in zip(self.arrays["ruh_host"], self.arrays["ruh_media"])]

    def handle_types(self) -> list[int]:
        return self.geometry.handle_types()

    @property
    def mapped_pages(self) -> int:
        return int(self._c.mapped)

    def free_rus(self, rg: int = 0) -> int:
        return int(self.arrays["free_count"][rg])

    def waf(self) -> float:
        h, m, _ = self.counters()
        return m / h if h else float("nan")

    def stats(self) -> dict[str, Any]:
        c = self._c
        h, m, e = self.counters()
        return {"hbmw": h, "mbmw": m, "mbe": e, "gc_copies_bytes": m - h, "waf": self.waf(),
                "gc_runs": int(c.gc_runs), "mapped_bytes": int(c.mapped) * self.page_bytes,
                "free_rus": [int(x) for x in self.arrays["free_count"]],
                "handles": self.handle_counters()}

    def take_relocations(self) -> list[tuple[int, int]]:
        """(lpn, npages) runs relocated by GC since the last call (needs relocation_log)."""
        c = self._c
        if not c.reloc_cap:
            return []
        first = max(self._reloc_taken, c.reloc_n - c.reloc_cap)
        idx = np.arange(first, c.reloc_n) % c.reloc_cap
        self._reloc_taken = c.reloc_n
        runs: list[tuple[int, int]] = []
        for lpn in self.arrays["reloc"][idx].tolist():
            if runs and runs[-1][0] + runs[-1][1] == lpn:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((lpn, 1))
        return runs

    def check(self) -> None:
        """Check every invariant now; raises FtlError naming the first one broken."""
        r = lib.fc_ftl_check(self._c)
        if r:
            raise FtlError(f"emulated FTL invariant broken: {_CHECKS[r]}")

    # -- persistence (the bytes; the file is the device's: devices/emulated.py) ---------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything needed to continue later: (meta, arrays). meta carries the format
        version and the geometry fingerprint the state belongs to."""
        meta = {"version": STATE_VERSION, "geometry": self.geometry.fingerprint(),
                "scalars": {k: int(getattr(self._c, k)) for k in _SCALARS}}
        return meta, {k: v for k, v in self.arrays.items() if k != "reloc"}

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], geometry: Geometry,
                where: str = "saved state", **kw: Any) -> "Ftl":
        """An FTL continuing from ``state()``; FormatError naming ``where`` when the state is
        of another version or geometry, or malformed."""
        if meta.get("version") != STATE_VERSION:
            raise FormatError(f"{where}: emulated-SSD state version {meta.get('version')}, "
                              f"this flashcache reads {STATE_VERSION}; delete it to start afresh")
        fp = geometry.fingerprint()
        if meta.get("geometry") != fp:
            diff = {k: (v, fp.get(k)) for k, v in (meta.get("geometry") or {}).items() if fp.get(k) != v}
            raise FormatError(f"{where}: saved for another emulated SSD geometry "
                              f"(saved vs configured: {diff}); use the old settings, or set format = true in "
                              "the [device] table of the config to start this emulated SSD afresh (its data is lost)")
        ftl = cls(geometry, **kw)
        for k, v in arrays.items():
            if k not in ftl.arrays or ftl.arrays[k].shape != v.shape:
                raise FormatError(f"{where}: array {k} has shape {v.shape}, expected "
                                  f"{ftl.arrays[k].shape if k in ftl.arrays else 'none'}; delete it to start afresh")
            ftl.arrays[k][:] = v
        for k, v in meta["scalars"].items():
            setattr(ftl._c, k, v)
        ftl._reloc_taken = ftl._c.reloc_n
        ftl.check()
        return ftl
