"""The emulated SSD's shape: capacity, over-provisioning, reclaim units, groups, handles.

Owns the geometry arithmetic and the named presets; builds nothing. The OP convention is
the one of docs/waf-model.md and Desnoyers: OP = (T - U) / U, physical over exported, so
"7 %" means T = 1.07 U. The surprise: the physical size is rounded *up* to whole reclaim
units per reclaim group, so the effective OP (``op_actual``) can be a little above the
requested one; reports quote ``op_actual``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PAGE_BYTES = 4096          # mapping unit of the FTL
POLICIES = ("greedy", "fifo", "cost-benefit")
HANDLE_TYPES = {"II": 1, "PI": 2}   # initially / persistently isolated (FDP RUHT values)


@dataclass(frozen=True)
class Geometry:
    """What the FTL needs to know. Sizes in bytes."""

    capacity_bytes: int                 # exported capacity U
    op: float = 0.07                    # (T - U) / U
    ru_bytes: int = 8 << 20             # reclaim unit (the GC unit)
    nrg: int = 1                        # reclaim groups
    handles: tuple[str, ...] = ("II",) * 8   # reclaim unit handle types, "II" or "PI"
    lba_size: int = 4096                # host logical block, 512 or 4096
    gc_policy: str = "greedy"
    gc_reserve_rus: int = 2             # GC keeps more than this many free RUs per group
    fdp: bool = True                    # False: a conventional SSD, one host frontier
    page_bytes: int = field(default=PAGE_BYTES)

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"emulated SSD geometry: {what}")
        if self.page_bytes != PAGE_BYTES:
            raise bad(f"page_bytes = {self.page_bytes}: the mapping unit is fixed at {PAGE_BYTES}")
        if self.lba_size not in (512, 4096):
            raise bad(f"lba_size = {self.lba_size}: use 512 or 4096")
        if self.capacity_bytes <= 0 or self.capacity_bytes % self.page_bytes:
            raise bad(f"capacity {self.capacity_bytes} bytes: use a positive multiple of {self.page_bytes}")
        if self.ru_bytes <= 0 or self.ru_bytes % self.page_bytes:
            raise bad(f"reclaim unit size {self.ru_bytes} bytes: use a positive multiple of {self.page_bytes}")
        if not 0 < self.op <= 10:
            raise bad(f"op = {self.op}: over-provisioning is a fraction of the exported capacity, "
                      "e.g. 0.07 for 7 %; it must be above 0 so garbage collection has room")
        if self.nrg < 1 or self.nrg > 256:
            raise bad(f"nrg = {self.nrg}: use 1 to 256 reclaim groups")
        if not self.handles or len(self.handles) > 128:
            raise bad(f"{len(self.handles)} handles: use 1 to 128")
        for h in self.handles:
            if h not in HANDLE_TYPES:
                raise bad(f'handle type "{h}": use "II" (initially isolated) or "PI" (persistently isolated)')
        if self.gc_policy not in POLICIES:
            raise bad(f'gc_policy = "{self.gc_policy}": use one of {", ".join(POLICIES)}')
        if self.gc_reserve_rus < 1:
            raise bad(f"gc_reserve_rus = {self.gc_reserve_rus}: GC needs at least 1 free RU in reserve")
        if self.physical_pages >= 1 << 32:
            raise bad(f"{self.physical_pages} physical pages: the FTL maps at most 2^32 pages (16 TiB)")
        need = self.reserved_rus_per_rg + 1
        have = self.ru_per_rg - math.ceil(self.exported_pages / self.nrg / self.ru_pages)
        if have < need:
            raise bad(f"only {have} spare reclaim units per group, need at least {need} "
                      f"({self.gc_reserve_rus} GC reserve + {self.open_frontiers} open write frontiers + 1); "
                      "raise op, use smaller reclaim units or fewer handles")

    # -- derived ----------------------------------------------------------------------------
    @property
    def exported_pages(self) -> int:
        return self.capacity_bytes // self.page_bytes

    @property
    def ru_pages(self) -> int:
        return self.ru_bytes // self.page_bytes

    @property
    def nruh(self) -> int:
        return len(self.handles) if self.fdp else 1

    @property
    def ru_per_rg(self) -> int:
        t = math.ceil(self.exported_pages * (1 + self.op))
        return math.ceil(t / self.ru_pages / self.nrg)

    @property
    def nru(self) -> int:
        return self.ru_per_rg * self.nrg

    @property
    def physical_pages(self) -> int:
        return self.nru * self.ru_pages

    @property
    def op_actual(self) -> float:
        return (self.physical_pages - self.exported_pages) / self.exported_pages

    @property
    def open_frontiers(self) -> int:
        """Open RUs per group at worst: one per handle for host writes, one shared GC
        destination for II data and one per PI handle."""
        handles = self.handles if self.fdp else ("II",)
        return len(handles) + 1 + sum(h == "PI" for h in handles)

    @property
    def reserved_rus_per_rg(self) -> int:
        return self.gc_reserve_rus + self.open_frontiers

    def handle_types(self) -> list[int]:
        return [HANDLE_TYPES[h] for h in (self.handles if self.fdp else ("II",))]

    def fingerprint(self) -> dict[str, Any]:
        """The fields a saved FTL state must match to be reloaded."""
        d = asdict(self)
        d["handles"] = list(self.handles)
        return d

    def describe(self) -> str:
        kinds = ", ".join(f"{self.handles.count(k)} {k}" for k in HANDLE_TYPES if k in self.handles)
        return (f"{self.capacity_bytes / 2**30:.2f} GiB exported, OP {self.op_actual * 100:.1f} % "
                f"(asked {self.op * 100:g} %), RU {self.ru_bytes / 2**20:g} MiB x {self.nru} "
                f"in {self.nrg} RG, handles: {kinds if self.fdp else 'FDP off (conventional SSD)'}, "
                f"LBA {self.lba_size} B, GC {self.gc_policy}")


PRESETS: dict[str, Geometry] = {
    # The EuroSys 2025 device (1.88 TB, 8 II handles, 1 RG, ~6 GB RUs: ~313 RUs), scaled by
    # capacity but keeping a realistic RU count: 8 GiB exported in 24 MiB RUs (366 RUs at
    # 7 % OP). The real drive's OP is not published; 7 % is the common datacenter figure.
    "paper-1.88tb-scaled": Geometry(capacity_bytes=8 << 30, op=0.07, ru_bytes=24 << 20, nrg=1,
                                    handles=("II",) * 8, lba_size=4096),
    # The shape of QEMU's FDP namespace as tools/nvme-vm starts it (512 B LBAs, 8 handles,
    # 1 RG, 8 MiB RUs), on 1 GiB; QEMU has no spare area or GC, this one has 12 % OP.
    "qemu-like": Geometry(capacity_bytes=1 << 30, op=0.12, ru_bytes=8 << 20, nrg=1,
                          handles=("II",) * 8, lba_size=512),
    # Tiny and quick, for tests: 64 MiB in 1 MiB RUs.
    "small-test": Geometry(capacity_bytes=64 << 20, op=0.12, ru_bytes=1 << 20, nrg=1,
                           handles=("II",) * 4, lba_size=4096),
}


def preset(name: str, **overrides: Any) -> Geometry:
    """A named geometry with some fields replaced."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f'emulated SSD preset "{name}": use one of {", ".join(PRESETS)}') from None
    return replace(base, **overrides) if overrides else base
