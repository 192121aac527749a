"""BlockCache's on-flash entry: one item, self-describing and checksummed, aligned in its region.

Owns the byte layout of an entry and its checksum; knows nothing of regions or the index.
The surprise: the header holds no address, so an entry can be copied verbatim to another
place (reinsertion) and still checks out; what makes a stale copy harmless is the DRAM
index (it points at one place only), the full key (compared on every hit) and the
generation (bumped by ``reset()``).

On-flash layout (little-endian), one entry, starting on an ``alignment`` boundary::

    entry header, 44 B (ENTRY_HEADER)
      0  magic        4s   b"FCBC"
      4  version      u16  FORMAT_VERSION (1)
      6  header_size  u16  44
      8  checksum     u64  xxh3_64 seeded with CHECKSUM_SEED over bytes [0, 8) and
                           [16, 44 + key_len + value_len): the header without the checksum
                           field, then key and value
     16  generation   u64  the engine's generation when written; any other is a stale miss
     24  key_hash     u64  xxh3_64(key, KEY_SEED); its high 32 bits are the index tag
     32  value_len    u32
     36  expiry       u32  absolute time in whole seconds of the engine's clock; 0 = never
     40  key_len      u16
     42  flags        u16  0 (reserved)
     44  key bytes, then value bytes, then zeros up to the next ``alignment`` boundary

An entry takes ``ceil((44 + key_len + value_len) / alignment)`` alignment units; the
largest fits a whole region, so ``max_item_size`` (key + value) is ``region_size - 44``.

The layout is declared once per language: ``ENTRY_LAYOUT`` here, the E_* offsets in
``_core.c`` (which reads and writes entries in C); they are checked against each other,
with the magic, version and seeds, on import.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

import xxhash

from .. import formats
from ..device import MAX_EXPIRY  # noqa: F401 - the header's u32 expiry field holds up to this
from . import _core_c
from ._core_c import encode_entry as _encode_entry

MAGIC = b"FCBC"
FORMAT_VERSION = 1
KEY_SEED = 0x510E527FADE682D1
CHECKSUM_SEED = 0x9B05688C2B3E6C1F
ENTRY_LAYOUT = formats.Layout("BlockCache entry header", (
    ("magic", "4s"), ("version", "H"), ("header_size", "H"), ("checksum", "Q"), ("generation", "Q"),
    ("key_hash", "Q"), ("value_len", "I"), ("expiry", "I"), ("key_len", "H"), ("flags", "H")))
ENTRY_HEADER = ENTRY_LAYOUT.struct
HEADER_SIZE = ENTRY_HEADER.size
formats.check(ENTRY_LAYOUT, _core_c.ENTRY_FIELDS, "engines/blockcache/_core.c (E_*)", {
    "magic": (MAGIC, _core_c.MAGIC), "format version": (FORMAT_VERSION, _core_c.FORMAT_VERSION),
    "header size": (HEADER_SIZE, _core_c.HEADER_SIZE), "KEY_SEED": (KEY_SEED, _core_c.KEY_SEED),
    "CHECKSUM_SEED": (CHECKSUM_SEED, _core_c.CHECKSUM_SEED)})
MAX_KEY_LEN = 0xFFFF
_CHECKSUM_FIELD = struct.Struct("<Q")
_SUM_AT = ENTRY_LAYOUT.offset("checksum")
_SUM_END = _SUM_AT + _CHECKSUM_FIELD.size
_hash = xxhash.xxh3_64_intdigest
_xxh3 = xxhash.xxh3_64


def key_hash(key: bytes | bytearray | memoryview) -> int:
    """The 64-bit hash BlockCache stores for ``key`` (xxh3_64 with KEY_SEED)."""
    return _hash(key, KEY_SEED)


class CorruptEntry(Exception):
    """The bytes at an entry's address are not an intact entry; the message says why."""


class EntryHeader(NamedTuple):
    generation: int
    key_hash: int
    expiry: int
    key_len: int
    value_len: int
    length: int  # header + key + value bytes (unaligned)


def checksum(mv: memoryview, pos: int, end: int) -> int:
    """The checksum of the entry occupying ``mv[pos:end]`` (see the module docstring)."""
    h = _xxh3(seed=CHECKSUM_SEED)
    h.update(mv[pos:pos + _SUM_AT])
    h.update(mv[pos + _SUM_END:end])
    return h.intdigest()


def encode_into(buf: bytearray, pos: int, khash: int, generation: int, expiry: int,
                key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview) -> int:
    """Write one entry at ``buf[pos:]`` (the caller checked that it fits); returns its
    unaligned length. The padding after it is left as it is (the buffer keeps it zero).
    Bytes into a bytearray is one C call (``_core.c``'s ``encode_entry``: the same bytes
    as ``encode_into_py``, the reference, which does everything else)."""
    if key.__class__ is bytes and value.__class__ is bytes and buf.__class__ is bytearray:
        return _encode_entry(buf, pos, khash, generation, expiry, key, value)
    return encode_into_py(buf, pos, khash, generation, expiry, key, value)


def encode_into_py(buf: bytearray, pos: int, khash: int, generation: int, expiry: int,
                   key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview) -> int:
    """``encode_into`` in Python: the layout above, step by step."""
    klen, vlen = len(key), len(value)
    kstart = pos + HEADER_SIZE
    end = kstart + klen + vlen
    buf[kstart:kstart + klen] = key
    buf[kstart + klen:end] = value
    ENTRY_HEADER.pack_into(buf, pos, MAGIC, FORMAT_VERSION, HEADER_SIZE, 0, generation, khash, vlen, expiry, klen, 0)
    _CHECKSUM_FIELD.pack_into(buf, pos + _SUM_AT, checksum(memoryview(buf), pos, end))
    return end - pos


def decode(data: bytes | bytearray | memoryview, pos: int, end: int, verify: bool = True) -> EntryHeader:
    """The header of the entry at ``data[pos:]``, which must end by ``end``.

    Raises CorruptEntry on a bad magic, version or header size, lengths that overrun
    ``end``, or (with ``verify``) a checksum mismatch. The generation is returned, not
    judged: the caller knows which one it wants.
    """
    if pos < 0 or pos + HEADER_SIZE > end:
        raise CorruptEntry(f"no room for a {HEADER_SIZE}-byte header at {pos} (ends at {end})")
    magic, version, hsize, csum, generation, khash, vlen, expiry, klen, _flags = ENTRY_HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        raise CorruptEntry(f"bad magic {bytes(magic)!r}")
    if version != FORMAT_VERSION or hsize != HEADER_SIZE:
        raise CorruptEntry(f"format version {version} header {hsize} B, this code reads {FORMAT_VERSION}")
    length = HEADER_SIZE + klen + vlen
    if pos + length > end:
        raise CorruptEntry(f"key {klen} B + value {vlen} B overrun the {end - pos} bytes read")
    if verify and checksum(memoryview(data), pos, pos + length) != csum:
        raise CorruptEntry("checksum mismatch")
    return EntryHeader(generation, khash, expiry, klen, vlen, length)
