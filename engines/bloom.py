"""Per-bucket bloom filters for BigHash, all in one compact numpy array.

Owns only DRAM: one filter of ``nbytes`` bytes per bucket (a uint8 array of shape
(nbuckets, nbytes)), rebuilt whole from a bucket's key hashes each time the bucket is
written. No I/O here. The surprise: a filter starts *all bits set* ("unknown"), not empty,
so a cold engine over old data still reads every bucket until it has seen or rewritten it;
``clear()`` is the "known empty" state.

Bit positions come from the 64-bit key hash by double hashing over a remix (murmur3's
fmix64) of it: the engine picks the bucket from the same hash, so the keys of one bucket
share low bits, and the remix keeps the filter's positions independent of them.
"""
from __future__ import annotations

import struct

import numpy as np

_M64 = (1 << 64) - 1
_HEADER = struct.Struct("<4sHIHB")  # magic, version, nbuckets, nbytes, num_hashes
_MAGIC = b"FCBF"
_VERSION = 1


def _positions(keyhash: int, nbits: int, k: int) -> list[int]:
    """The k bit positions of ``keyhash`` in a filter of ``nbits`` bits."""
    h = keyhash & _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    h1 = h & 0xFFFFFFFF
    h2 = (h >> 32) | 1
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

    def __init__(self, nbuckets: int, nbytes: int = 8, num_hashes: int = 4) -> None:
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
        self.bits = np.full((nbuckets, nbytes), 0xFF, dtype=np.uint8)
        # A flat byte view: single-byte indexing without creating numpy scalars.
        self._flat = memoryview(self.bits).cast("B") if nbytes else memoryview(b"")
        self._full = b"\xff" * nbytes
        self._empty = bytes(nbytes)

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
        self._check(bucket)
        flat, base = self._flat, bucket * self.nbytes
        for p in _positions(keyhash, self.nbits, self.num_hashes):
            if not flat[base + (p >> 3)] & (1 << (p & 7)):
                return False
        return True

    def rebuild(self, bucket: int, keyhashes) -> None:
        """Replace ``bucket``'s filter by one holding exactly ``keyhashes``."""
        if not self.nbits:
            return
        self._check(bucket)
        mask = 0
        nbits, k = self.nbits, self.num_hashes
        for kh in keyhashes:
            for p in _positions(kh, nbits, k):
                mask |= 1 << p
        base = bucket * self.nbytes
        self._flat[base:base + self.nbytes] = mask.to_bytes(self.nbytes, "little")

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

    def invalidate_all(self) -> None:
        """Mark every bucket unknown (the state of a fresh, cold engine)."""
        self.bits.fill(0xFF)

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
        bf = cls(nbuckets, nbytes, k)
        want = _HEADER.size + nbuckets * nbytes
        if len(data) != want:
            raise ValueError(f"bloom filters: {nbuckets} x {nbytes} B need {want} bytes, got {len(data)}")
        bf.bits[...] = np.frombuffer(data[_HEADER.size:], dtype=np.uint8).reshape(nbuckets, nbytes)
        return bf

    def __repr__(self) -> str:
        return f"BloomFilters(nbuckets={self.nbuckets}, nbytes={self.nbytes}, num_hashes={self.num_hashes})"
