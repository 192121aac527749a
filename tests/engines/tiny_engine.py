"""A tiny engine that exists only for the tests: it shows that a third engine plugs into the
router through the Engine interface alone (engines/engine.py), with no C and no change to
engines/.

``Tiny`` maps each key to one slot (``slot_size`` bytes) by its hash, one item per slot,
last writer wins; its DRAM state is a byte per slot saying whether the slot may hold an
item. Slot layout (little-endian)::

    0  magic       4s  b"TINY"
    4  generation  u64
   12  expiry      u32  0 = never
   16  key_len     u16
   18  value_len   u32
   22  key bytes, then value bytes, then zeros to the end of the slot
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any, Callable, Mapping

import xxhash

from engines.device import Op, Read, Write, expiry_seconds
from engines.engine import Engine

HEADER = struct.Struct("<4sQIHI")
MAGIC = b"TINY"


class Tiny(Engine):
    name = "tiny"

    def __init__(self, offset: int, size: int, slot_size: int = 4096, stream: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.offset, self.slot_size = offset, slot_size
        self.nslots = size // slot_size
        self.stream = stream
        self.clock = clock
        self.generation = 0
        self.max_item_size = slot_size - HEADER.size
        self.present = bytearray(self.nslots)
        self.lock = threading.RLock()
        self.counters = dict.fromkeys(("lookups", "hits", "inserts", "removes", "bytes_written"), 0)

    # -- building
    @classmethod
    def extent_unit(cls, options: Mapping[str, Any]) -> int:
        return options.get("slot_size", 4096)

    @classmethod
    def build(cls, offset: int, size: int, *, stream: Any, clock: Callable[[], float], block_size: int,
              options: Mapping[str, Any]) -> "Tiny":
        return cls(offset, size, stream=stream, clock=clock, **options)

    def layout(self) -> dict[str, Any]:
        return {"slot_size": self.slot_size}

    # -- items
    def _slot(self, key: bytes) -> int:
        return xxhash.xxh3_64_intdigest(key) % self.nslots

    def _at(self, slot: int) -> int:
        return self.offset + slot * self.slot_size

    def may_hold(self, key: bytes) -> bool:
        return bool(self.present[self._slot(key)])

    def lookup_item(self, key: bytes) -> Op[tuple[bytes, float] | None]:
        self.counters["lookups"] += 1
        s = self._slot(key)
        if not self.present[s]:
            return None
        data = yield Read(self._at(s), self.slot_size)
        magic, gen, expiry, klen, vlen = HEADER.unpack_from(data)
        end = HEADER.size + klen
        if magic != MAGIC or gen != self.generation or bytes(data[HEADER.size:end]) != key:
            return None
        if expiry and expiry <= self.clock():
            return None
        self.counters["hits"] += 1
        return bytes(data[end:end + vlen]), float(expiry)

    def insert(self, key: bytes, value: bytes, expiry: float = 0) -> Op[bool]:
        if len(key) + len(value) > self.max_item_size:
            raise ValueError(f"tiny: an item of {len(key) + len(value)} bytes does not fit a slot")
        s = self._slot(key)
        body = HEADER.pack(MAGIC, self.generation, expiry_seconds("tiny", expiry), len(key), len(value)) + key + value
        with self.lock:
            yield Write(self._at(s), body.ljust(self.slot_size, b"\0"), self.stream)
            self.present[s] = 1
        self.counters["inserts"] += 1
        self.counters["bytes_written"] += self.slot_size
        return True

    def remove(self, key: bytes) -> Op[bool]:
        self.counters["removes"] += 1
        s = self._slot(key)
        with self.lock:
            if not self.present[s]:
                return False
            data = yield Read(self._at(s), self.slot_size)
            if bytes(data[HEADER.size:HEADER.size + HEADER.unpack_from(data)[3]]) != key:
                return False
            yield Write(self._at(s), bytes(self.slot_size), self.stream)
            self.present[s] = 0
        self.counters["bytes_written"] += self.slot_size
        return True

    # -- life cycle
    def reset(self) -> None:
        self.generation = (self.generation + 1) & (1 << 64) - 1
        self.present[:] = bytes(self.nslots)

    def persist(self) -> dict[str, Any]:
        return {"engine": self.name, "nslots": self.nslots, "present": bytes(self.present),
                "counters": dict(self.counters)}

    def recover(self, state: dict[str, Any] | None) -> bool:
        if not isinstance(state, dict) or state.get("nslots") != self.nslots:
            return False
        self.present[:] = state["present"]
        self.counters.update(state["counters"])
        return True

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "items": sum(self.present), "items_exact": False}
