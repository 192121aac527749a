"""BlockCache's on-flash entry: one item, self-describing and checksummed, aligned in its region.

Owns the byte layout of an entry and its checksum; knows nothing of regions or the index.
The surprise: the header holds no address, so an entry can be copied to another place
(reinsertion, which stamps it with a fresh ``seq``) and still checks out; what makes a
stale copy harmless is the DRAM index (it points at one place only), the full key
(compared on every hit), the generation (bumped by ``reset()``) and, after a crash, the
log order that ``seq`` records (see blockcache.py: replay and tombstones).

On-flash layout (little-endian), one entry, starting on an ``alignment`` boundary::

    entry header, 52 B (ENTRY_HEADER)
      0  magic        4s   b"FCBC"
      4  version      u16  FORMAT_VERSION (2)
      6  header_size  u16  52
      8  checksum     u64  xxh3_64 seeded with CHECKSUM_SEED over bytes [0, 8) and
                           [16, 52 + key_len + value_len): the header without the checksum
                           field, then key and value
     16  generation   u64  the engine's generation when written; any other is a stale miss
     24  key_hash     u64  xxh3_64(key, KEY_SEED); its high 32 bits are the index tag
     32  value_len    u32
     36  expiry       u32  absolute time in whole seconds of the engine's clock; 0 = never
     40  key_len      u16
     42  flags        u16  0 an item; TOMBSTONE (1): the key was removed (no value);
                           MARKER (2): the region was reclaimed (no key, no value)
     44  seq          u64  the engine's log sequence number: strictly increasing along
                           the log (every appended entry, tombstone and marker takes the
                           next one); crash recovery replays entries in this order
     52  key bytes, then value bytes, then zeros up to the next ``alignment`` boundary

An entry takes ``ceil((52 + key_len + value_len) / alignment)`` alignment units; the
largest fits a whole region, so ``max_item_size`` (key + value) is ``region_size - 52``.

Version 1 (44 B, no ``seq``) cannot be replayed after a crash; a cache written by it is
reset once on open ("layout changed ... engines.blockcache.entry_format 1 -> 2").

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
FORMAT_VERSION = 2
TOMBSTONE = 1
MARKER = 2
KEY_SEED = 0x510E527FADE682D1
CHECKSUM_SEED = 0x9B05688C2B3E6C1F
ENTRY_LAYOUT = formats.Layout("BlockCache entry header", (
    ("magic", "4s"), ("version", "H"), ("header_size", "H"), ("checksum", "Q"), ("generation", "Q"),
    ("key_hash", "Q"), ("value_len", "I"), ("expiry", "I"), ("key_len", "H"), ("flags", "H"),
    ("seq", "Q")))
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
_SEQ_FIELD = struct.Struct("<Q")
_SEQ_AT = ENTRY_LAYOUT.offset("seq")
_hash = xxhash.xxh3_64_intdigest
_xxh3 = xxhash.xxh3_64


def key_hash(key: bytes | bytearray | memoryview) -> int:
    """The 64-bit hash BlockCache stores for ``key`` (xxh3_64 with KEY_SEED)."""
    return _hash(key, KEY_SEED)


JOURNAL_MAGIC = b"FCTJ"
JOURNAL_HEADER = struct.Struct("<4sHHQQQ")   # magic, version, count, epoch, generation, checksum
JOURNAL_RECORD = struct.Struct("<QQ")        # seq, key_hash


def journal_block(block: int, epoch: int, generation: int, records: list[tuple[int, int]]) -> bytes:
    """One block of the tombstone journal (blockcache.py): ``records`` (seq, key hash),
    checksummed with the header (xxh3_64, CHECKSUM_SEED) so a torn block reads as none."""
    body = b"".join(JOURNAL_RECORD.pack(s, k) for s, k in records)
    head = JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, len(records), epoch, generation, 0)
    raw = head[:-8] + body
    out = head[:-8] + struct.pack("<Q", _hash(raw, CHECKSUM_SEED)) + body
    if len(out) > block:
        raise ValueError(f"journal block of {len(out)} bytes does not fit {block}")
    return out.ljust(block, b"\0")


def journal_records(data: bytes | bytearray | memoryview, epoch: int, generation: int) -> list[tuple[int, int]]:
    """The (seq, key hash) records of a journal block of ``epoch`` and ``generation``;
    [] for any other block, a torn one, or zeros."""
    hsize = JOURNAL_HEADER.size
    if len(data) < hsize or bytes(data[:4]) != JOURNAL_MAGIC:
        return []
    magic, version, count, ep, gen, csum = JOURNAL_HEADER.unpack_from(data, 0)
    end = hsize + count * JOURNAL_RECORD.size
    if version != FORMAT_VERSION or ep != epoch or gen != generation or end > len(data):
        return []
    if _hash(bytes(data[:hsize - 8]) + bytes(data[hsize:end]), CHECKSUM_SEED) != csum:
        return []
    return [JOURNAL_RECORD.unpack_from(data, hsize + i * JOURNAL_RECORD.size) for i in range(count)]


class CorruptEntry(Exception):
    """The bytes at an entry's address are not an intact entry; the message says why."""


class EntryHeader(NamedTuple):
    generation: int
    key_hash: int
    expiry: int
    key_len: int
    value_len: int
    length: int  # header + key + value bytes (unaligned)
    seq: int = 0
    flags: int = 0


def checksum(mv: memoryview, pos: int, end: int) -> int:
    """The checksum of the entry occupying ``mv[pos:end]`` (see the module docstring)."""
    h = _xxh3(seed=CHECKSUM_SEED)
    h.update(mv[pos:pos + _SUM_AT])
    h.update(mv[pos + _SUM_END:end])
    return h.intdigest()


def encode_into(buf: bytearray, pos: int, khash: int, generation: int, expiry: int,
                key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview,
                seq: int = 0, flags: int = 0) -> int:
    """Write one entry at ``buf[pos:]`` (the caller checked that it fits); returns its
    unaligned length. The padding after it is left as it is (the buffer keeps it zero).
    Bytes into a bytearray is one C call (``_core.c``'s ``encode_entry``: the same bytes
    as ``encode_into_py``, the reference, which does everything else)."""
    if key.__class__ is bytes and value.__class__ is bytes and buf.__class__ is bytearray:
        return _encode_entry(buf, pos, khash, generation, expiry, key, value, seq, flags)
    return encode_into_py(buf, pos, khash, generation, expiry, key, value, seq, flags)


def encode_into_py(buf: bytearray, pos: int, khash: int, generation: int, expiry: int,
                   key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview,
                   seq: int = 0, flags: int = 0) -> int:
    """``encode_into`` in Python: the layout above, step by step."""
    klen, vlen = len(key), len(value)
    kstart = pos + HEADER_SIZE
    end = kstart + klen + vlen
    buf[kstart:kstart + klen] = key
    buf[kstart + klen:end] = value
    ENTRY_HEADER.pack_into(buf, pos, MAGIC, FORMAT_VERSION, HEADER_SIZE, 0, generation, khash, vlen, expiry, klen,
                           flags, seq)
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
    magic, version, hsize, csum, generation, khash, vlen, expiry, klen, flags, seq = ENTRY_HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        raise CorruptEntry(f"bad magic {bytes(magic)!r}")
    if version != FORMAT_VERSION or hsize != HEADER_SIZE:
        raise CorruptEntry(f"format version {version} header {hsize} B, this code reads {FORMAT_VERSION}")
    length = HEADER_SIZE + klen + vlen
    if pos + length > end:
        raise CorruptEntry(f"key {klen} B + value {vlen} B overrun the {end - pos} bytes read")
    if verify and checksum(memoryview(data), pos, pos + length) != csum:
        raise CorruptEntry("checksum mismatch")
    return EntryHeader(generation, khash, expiry, klen, vlen, length, seq, flags)


def restamp(buf: bytearray | memoryview, pos: int, length: int, seq: int) -> None:
    """Give the entry at ``buf[pos:pos + length]`` (a copy: reinsertion) a new ``seq``,
    and its checksum again."""
    _SEQ_FIELD.pack_into(buf, pos + _SEQ_AT, seq)
    _CHECKSUM_FIELD.pack_into(buf, pos + _SUM_AT, checksum(memoryview(buf), pos, pos + length))
