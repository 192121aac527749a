"""The superblock: block 0 of a flashcache device, naming its format, layout and engines.

Owns the superblock's bytes (``HEADER``, the one definition of its layout) and their
encoding and checks; knows no engine, only their records (a name, a generation and a
layout each, in device order). The surprise: the fingerprint covers the layout (the
router's and every engine's) but not the generations, which change at every format; a
different fingerprint, or any other format version, resets the cache and says why.

Block 0 (little-endian)::

    0  magic        8s   engines.device.SUPERBLOCK_MAGIC (b"FLCACHE\\x01")
    8  version      u16  FORMAT_VERSION
   10  header_size  u16  HEADER.size
   12  flags        u32  0
   16  fingerprint  u64  xxh64 of the layout (msgpack): any change resets the cache
   24  meta_len     u64  bytes of valid metadata after block 0; 0 = none (crash or recovered)
   32  meta_sum     u64  xxh64 of those bytes
   40  body_len     u32  bytes of the body that follow the header
   44  body         ...  msgpack: {"layout": the router's layout (device_size, block,
                         meta_end, ...), "engines": [{"name", "generation", "layout"}, ...],
                         "mix": the bytes of items the engines took, by size class
                         ({"small": ..., "large": ...}, decayed; outside the fingerprint:
                         it carries the observed mix across formats for "auto" splits)}
   ..  checksum     u64  xxh64 of everything before it

The metadata area after block 0 holds two checkpoint slots (``CHECKPOINT``, below): each
a header block then a msgpack body. The router writes each checkpoint to the slot not
holding the newest one, so a crash while writing it leaves the other intact; on open the
valid slot with the highest ``seq`` wins. A clean close writes one too, and the
superblock's ``meta_len``/``meta_sum`` name its body: that one is "clean".

Checkpoint slot header (little-endian), at the start of its slot::

    0  magic        8s   CHECKPOINT_MAGIC (b"FCCKPT\x00\x01")
    8  version      u16  CHECKPOINT_VERSION
   10  header_size  u16  CHECKPOINT.size
   12  flags        u32  1 = written by a clean close (all engines' state), 0 = periodic
   16  seq          u64  checkpoints written since the format, + 1
   24  fingerprint  u64  the layout's (as in block 0)
   32  body_len     u64  msgpack bytes after the header's block
   40  body_sum     u64  xxh64 (SEED) of the body
   48  head_sum     u64  xxh64 (SEED) of bytes [0, 48)

Version 1 kept exactly two engines' generations in fixed fields (bh_gen, bc_gen at 24 and
32); version 2 records any list of engines in the body. The magic, version and header
size stay at 0, 8 and 10 in every version, so an old superblock reads as another format.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
import xxhash

from .device import SUPERBLOCK_MAGIC
from .formats import Layout

FORMAT_VERSION = 2
HEADER = Layout("superblock", (
    ("magic", "8s"), ("version", "H"), ("header_size", "H"), ("flags", "I"), ("fingerprint", "Q"),
    ("meta_len", "Q"), ("meta_sum", "Q"), ("body_len", "I")))
CHECKPOINT = Layout("checkpoint slot", (
    ("magic", "8s"), ("version", "H"), ("header_size", "H"), ("flags", "I"), ("seq", "Q"), ("fingerprint", "Q"),
    ("body_len", "Q"), ("body_sum", "Q"), ("head_sum", "Q")))
CHECKPOINT_MAGIC = b"FCCKPT\x00\x01"
CHECKPOINT_VERSION = 1
CLEAN = 1
_PREFIX = struct.Struct("<8sHH")        # magic, version, header_size: the same in every version
_SUM = struct.Struct("<Q")
SEED = 0x3C6EF372FE94F82B


def xxh(data: bytes | bytearray | memoryview) -> int:
    """The superblock's and the metadata's checksum (xxh64 with SEED)."""
    return xxhash.xxh64_intdigest(data, SEED)


def fingerprint(layout: dict[str, Any]) -> int:
    """What identifies a layout: any change to it resets the cache."""
    return xxh(msgpack.packb(layout, use_bin_type=True))


class Unreadable(Exception):
    """Block 0 is not a superblock this code can use; the message says why."""


@dataclass
class Superblock:
    """A superblock's contents. ``layout`` is the router's layout with each engine's under
    ``layout["engines"][name]``; ``generations`` each engine's generation by name."""

    fingerprint: int
    layout: dict[str, Any]
    generations: dict[str, int]
    meta_len: int = 0
    meta_sum: int = 0
    mix: dict[str, float] = field(default_factory=dict)

    def encode(self, block: int) -> bytes:
        """Block 0's bytes (``block`` long); ValueError if the superblock does not fit."""
        router = {k: v for k, v in self.layout.items() if k != "engines"}
        engines = [{"name": name, "generation": self.generations.get(name, 0), "layout": lay}
                   for name, lay in self.layout.get("engines", {}).items()]
        body = msgpack.packb({"layout": router, "engines": engines, "mix": self.mix}, use_bin_type=True)
        head = HEADER.struct.pack(SUPERBLOCK_MAGIC, FORMAT_VERSION, HEADER.size, 0, self.fingerprint,
                                  self.meta_len, self.meta_sum, len(body)) + body
        out = head + _SUM.pack(xxh(head))
        if len(out) > block:
            raise ValueError(f"superblock of {len(out)} bytes does not fit in {block}")
        return out.ljust(block, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> "Superblock":
        """The superblock in ``raw`` (block 0); Unreadable says why not."""
        if raw[:8] != SUPERBLOCK_MAGIC:
            raise Unreadable("new device" if not any(raw) else "no flashcache superblock (block 0 holds other data)")
        _, version, hsize = _PREFIX.unpack_from(raw, 0)
        if version != FORMAT_VERSION or hsize != HEADER.size:
            raise Unreadable(f"format changed, the cache was reset (superblock format version {version}, "
                             f"this code reads {FORMAT_VERSION})")
        try:
            (_, _, _, _, fp, meta_len, meta_sum, body_len) = HEADER.struct.unpack_from(raw, 0)
            end = HEADER.size + body_len
            if end + _SUM.size > len(raw):
                raise Unreadable("superblock corrupt (body length out of range)")
            if _SUM.unpack_from(raw, end)[0] != xxh(raw[:end]):
                raise Unreadable("superblock corrupt (checksum mismatch)")
            body = msgpack.unpackb(raw[HEADER.size:end], raw=False)
            layout = dict(body["layout"])
            layout["engines"] = {e["name"]: e["layout"] for e in body["engines"]}
            generations = {e["name"]: int(e["generation"]) for e in body["engines"]}
            mix = {str(k): float(v) for k, v in (body.get("mix") or {}).items()}
        except (struct.error, ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
            raise Unreadable(f"superblock corrupt ({e})") from None
        return cls(fp, layout, generations, meta_len, meta_sum, mix)


def changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """What differs between two layouts, as "key old -> new" (nested keys dotted)."""
    out = []
    for k in dict.fromkeys([*old, *new]):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changes(a, b, f"{prefix}{k}.")
        elif k not in new:
            out.append(f"{prefix}{k} removed")
        elif k not in old:
            out.append(f"{prefix}{k} added")
        elif a != b:
            out.append(f"{prefix}{k} {a} -> {b}")
    return out


@dataclass
class CheckpointHead:
    """A checkpoint slot's header: see the module docstring."""

    seq: int
    flags: int
    fingerprint: int
    body_len: int
    body_sum: int

    def encode(self, block: int) -> bytes:
        head = CHECKPOINT.struct.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, CHECKPOINT.size, self.flags, self.seq,
                                      self.fingerprint, self.body_len, self.body_sum, 0)
        at = CHECKPOINT.offset("head_sum")
        head = head[:at] + _SUM.pack(xxh(head[:at]))
        return head.ljust(block, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> "CheckpointHead | None":
        """The header at the start of ``raw``, or None if it is not an intact one."""
        if len(raw) < CHECKPOINT.size or raw[:8] != CHECKPOINT_MAGIC:
            return None
        (_, version, hsize, flags, seq, fp, body_len, body_sum, head_sum) = CHECKPOINT.struct.unpack_from(raw, 0)
        if (version != CHECKPOINT_VERSION or hsize != CHECKPOINT.size
                or head_sum != xxh(raw[:CHECKPOINT.offset("head_sum")])):
            return None
        return cls(seq, flags, fp, body_len, body_sum)
