"""Per-bucket bloom filters for BigHash, all in one compact numpy array.

Owns only DRAM: one filter of ``nbytes`` bytes per bucket (a uint8 array of shape
(nbuckets, nbytes)), rebuilt whole from a bucket's key hashes each time the bucket is
written. No I/O here. The surprise: a filter starts *all bits set* ("unknown"), not empty,
so a cold engine over old data still reads every bucket until it has seen or rewritten it;
``clear()`` is the "known empty" state.

Bit positions come from the *low 32 bits* of the 64-bit key hash by double hashing
(h1 = bits 0-15, h2 = bits 16-31, position i = (h1 + i*h2) mod nbits); the engine picks
the bucket from the high 32 bits, so the keys of one bucket do not share filter bits.

The bit work (may_contain, is_unknown, rebuild) runs in C (``_bucket.c`` beside this file,
built by cffi at install time) directly on the numpy array's memory; ``c`` is that filter
set as a C ``fc_bloom *`` for the cffi calls (BigHash rebuilds a filter from a bucket
image). BigHash's C core takes the filters as ``bits`` (a buffer) and ``num_hashes``.
"""
from __future__ import annotations

import struct

import numpy as np

try:
    from engines.bighash._bucket_c import ffi as _ffi
    from engines.bighash._bucket_c import lib as _lib
except ImportError as exc:  # pragma: no cover - only without the build
    raise ImportError(
        "engines.bighash._bucket_c (the C core of BigHash and its bloom filters) is not built: "
        "run `make setup` (or `.venv/bin/pip install -e .`)"
    ) from exc

_HEADER = struct.Struct("<4sHIHB")  # magic, version, nbuckets, nbytes, num_hashes
_MAGIC = b"FCBF"
_VERSION = 1


def positions(keyhash: int, nbits: int, k: int) -> list[int]:
    """The k bit positions of ``keyhash`` in a filter of ``nbits`` bits."""
    h1 = keyhash & 0xFFFF
    h2 = (keyhash >> 16) & 0xFFFF | 1
    return [(h1 + i * h2) % nbits for i in range(k)]


class BloomFilters:
    """``nbuckets`` small bloom filters of ``nbytes`` bytes and ``num_hashes`` hashes each.

    ``nbytes = 0`` disables filtering: ``may_contain`` always answers True and the
    filters use no DRAM.

    >>> bf = BloomFilters(4, 8)
    >>> bf.rebuild(2, [0x1234])
    >>> bf.may_contain(2, 0x1234)
    True
    """

    def __init__(self, nbuckets: int, nbytes: int = 8, num_hashes: int = 4, unknown: int | None = None) -> None:
        if not isinstance(nbuckets, int) or not 1 <= nbuckets < 1 << 32:
            raise ValueError(f"bloom filters: nbuckets = {nbuckets!r}: use an int from 1 to 2**32 - 1")
        if not isinstance(nbytes, int) or not 0 <= nbytes <= 4096:
            raise ValueError(f"bloom filters: nbytes = {nbytes!r}: use an int from 0 (off) to 4096 bytes per bucket")
        if not isinstance(num_hashes, int) or not 1 <= num_hashes <= 32:
            raise ValueError(f"bloom filters: num_hashes = {num_hashes!r}: use an int from 1 to 32")
        self.nbuckets = nbuckets
        self.nbytes = nbytes
        self.num_hashes = num_hashes
        self.nbits = nbytes * 8
        # Filters [0, unknown) start unknown, the rest empty (a BigHash that may grow: its
        # buckets not yet in use; zeros, which the OS maps lazily, so they cost no DRAM
        # until a split writes them)
        self.bits = np.zeros((nbuckets, nbytes), dtype=np.uint8)
        self.bits[:nbuckets if unknown is None else max(0, min(unknown, nbuckets))] = 0xFF
        # A flat byte view: single-byte indexing without creating numpy scalars.
        self._flat = memoryview(self.bits).cast("B") if nbytes else memoryview(b"")
        self._full = b"\xff" * nbytes
        self._empty = bytes(nbytes)
        # The C view of ``bits`` (the array is only ever changed in place, never replaced).
        self._cbits = _ffi.from_buffer("uint8_t[]", self.bits) if nbytes else _ffi.NULL
        self.c = _ffi.new("fc_bloom *", {"bits": self._cbits, "nbuckets": nbuckets, "nbytes": nbytes,
                                        "k": num_hashes})
        """This filter set as a C ``fc_bloom *`` for cffi calls (see ``_bucket.h``)."""

    @property
    def enabled(self) -> bool:
        """False when the filters were built with ``nbytes = 0``."""
        return self.nbytes > 0

    @property
    def dram_bytes(self) -> int:
        """Bytes of DRAM the filters hold."""
        return int(self.bits.nbytes)

    def _check(self, bucket: int) -> None:
        if not 0 <= bucket < self.nbuckets:
            raise IndexError(f"bloom filters: bucket {bucket} out of range 0..{self.nbuckets - 1}")

    def may_contain(self, bucket: int, keyhash: int) -> bool:
        """False only if the key with this hash is surely not in ``bucket``."""
        if not self.nbits:
            return True
        if not 0 <= bucket < self.nbuckets:
            self._check(bucket)
        return _lib.fc_bloom_may_contain(self.c, bucket, keyhash) != 0

    def rebuild(self, bucket: int, keyhashes) -> None:
        """Replace ``bucket``'s filter by one holding exactly ``keyhashes``."""
        if not self.nbits:
            return
        self._check(bucket)
        if not isinstance(keyhashes, (list, tuple)):
            keyhashes = list(keyhashes)
        _lib.fc_bloom_rebuild(self.c, bucket, _ffi.new("uint64_t[]", keyhashes) if keyhashes else _ffi.NULL,
                              len(keyhashes))

    def is_unknown(self, bucket: int) -> bool:
        """True if ``bucket``'s filter is all set: never built (a cold engine) or saturated."""
        if not self.nbits:
            return True
        if not 0 <= bucket < self.nbuckets:
            self._check(bucket)
        return _lib.fc_bloom_is_unknown(self.c, bucket) != 0

    def clear(self, bucket: int) -> None:
        """Mark ``bucket`` known empty: every lookup in it is rejected."""
        if self.nbits:
            self._check(bucket)
            base = bucket * self.nbytes
            self._flat[base:base + self.nbytes] = self._empty

    def invalidate(self, bucket: int) -> None:
        """Mark ``bucket`` unknown (all bits set): every lookup in it reads flash."""
        if self.nbits:
            self._check(bucket)
            base = bucket * self.nbytes
            self._flat[base:base + self.nbytes] = self._full

    def clear_all(self) -> None:
        """Mark every bucket known empty (after a reset of the engine)."""
        self.bits.fill(0)

    def to_bytes(self) -> bytes:
        """Serialise the filters (a small header naming the geometry, then the bits)."""
        return _HEADER.pack(_MAGIC, _VERSION, self.nbuckets, self.nbytes, self.num_hashes) + self.bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> "BloomFilters":
        """Rebuild filters saved by ``to_bytes``; ValueError says what was wrong."""
        data = memoryview(data).cast("B")
        if len(data) < _HEADER.size:
            raise ValueError(f"bloom filters: need at least {_HEADER.size} bytes, got {len(data)}")
        magic, version, nbuckets, nbytes, k = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError(f"bloom filters: bad magic {bytes(magic)!r}, expected {_MAGIC!r}")
        if version != _VERSION:
            raise ValueError(f"bloom filters: format version {version}, this code reads {_VERSION}")
        bf = cls(nbuckets, nbytes, k, unknown=0)
        want = _HEADER.size + nbuckets * nbytes
        if len(data) != want:
            raise ValueError(f"bloom filters: {nbuckets} x {nbytes} B need {want} bytes, got {len(data)}")
        bf.bits[...] = np.frombuffer(data[_HEADER.size:], dtype=np.uint8).reshape(nbuckets, nbytes)
        return bf

    def __repr__(self) -> str:
        return f"BloomFilters(nbuckets={self.nbuckets}, nbytes={self.nbytes}, num_hashes={self.num_hashes})"
