"""Replay of the public Twitter cache-trace CSV format (twitter/cache-trace; Yang, Yue and
Vinayak, OSDI 2020): one request per line,

    timestamp,anonymized key,key size,value size,client id,operation,TTL

timestamp in seconds, sizes in bytes, operation one of get, gets, set, add, replace, cas,
append, prepend, delete, incr, decr; TTL in seconds (0 for non-writes).

Owns reading (plain, gzip or zstd, recognised by their magic bytes and streamed, never
loaded whole), mapping a row to a get, set or delete, and counting what it could not use:
a malformed line or an unknown operation is counted and skipped, never fatal. The
surprise: the anonymized key is not the original key's length, so the key is padded to
the row's key size (never cut: two keys must stay two keys).
"""
from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path
from typing import IO, Iterator

from .generator import DELETE, GET, SET, Batch

OPS = {"get": GET, "gets": GET, "set": SET, "add": SET, "replace": SET, "cas": SET, "append": SET,
       "prepend": SET, "incr": SET, "decr": SET, "delete": DELETE}
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def open_text(path: str | Path) -> IO[str]:
    """The file as text, decompressing gzip or zstd on the fly (by magic, not by name)."""
    raw = open(path, "rb")
    head = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if head.startswith(GZIP_MAGIC):
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", errors="replace", newline="")
    if head.startswith(ZSTD_MAGIC):
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8", errors="replace", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


class TraceReader:
    """Batches of operations from a trace file; ``loop`` starts it again at the end (its
    clock goes on from where it was). ``counts`` says what was read and what was not."""

    def __init__(self, path: str | Path, *, loop: bool = False):
        self.path = str(path)
        self.loop = loop
        self.counts: Counter[str] = Counter()
        self.unknown_ops: Counter[str] = Counter()
        self.passes = 0
        self._offset = 0.0            # clock of the current pass's start
        self._t0: float | None = None
        self._last = 0.0
        with open_text(self.path):     # fail early, naming the file
            pass

    def _rows(self) -> Iterator[tuple[int, bytes, int, float, float]]:
        counts, unknown = self.counts, self.unknown_ops
        while True:
            self.passes += 1
            got = 0
            # what a pass cannot use is the same every pass: counted in the first only
            bad = counts if self.passes == 1 else Counter()
            with open_text(self.path) as f:
                for line in f:
                    counts["lines"] += 1
                    parts = line.rstrip("\r\n").split(",")
                    if len(parts) < 7:
                        bad["malformed"] += 1
                        continue
                    if len(parts) > 7:                 # a key holding commas
                        parts = [parts[0], ",".join(parts[1:-5]), *parts[-5:]]
                    op = OPS.get(parts[5].strip().lower())
                    if op is None:
                        bad["unknown_op"] += 1
                        if self.passes == 1:
                            unknown[parts[5].strip()[:32]] += 1
                        continue
                    try:
                        ts = float(parts[0])
                        ksize, vsize = int(parts[2]), int(parts[3])
                        ttl = float(parts[6]) if parts[6].strip() else 0.0
                    except ValueError:
                        bad["malformed"] += 1
                        continue
                    key = parts[1].encode()
                    if not key or ksize < 0 or vsize < 0 or ttl < 0:
                        bad["malformed"] += 1
                        continue
                    if len(key) < ksize:
                        key = key.ljust(ksize, b".")
                    if self._t0 is None:
                        self._t0 = ts
                    t = self._offset + ts - self._t0
                    self._last = max(self._last, t)
                    counts["ops"] += 1
                    got += 1
                    yield op, key, vsize, ttl, t
            if not self.loop or not got:
                return
            self._offset = self._last + 1.0
            self._t0 = None

    def batches(self, n: int = 4096) -> Iterator[Batch]:
        ops: list[int] = []
        keys: list[bytes] = []
        sizes: list[int] = []
        ttls: list[float] = []
        t0 = 0.0
        for op, key, vsize, ttl, t in self._rows():
            if not ops:
                t0 = t
            ops.append(op)
            keys.append(key)
            sizes.append(vsize)
            ttls.append(ttl)
            if len(ops) == n:
                yield Batch(ops, keys, sizes, ttls, t0)
                ops, keys, sizes, ttls = [], [], [], []
        if ops:
            yield Batch(ops, keys, sizes, ttls, t0)

    def report(self) -> dict:
        """What the replay used and skipped: lines and ops over every pass; malformed lines
        and unknown operations (with their names) of one pass of the file."""
        return {"path": self.path, "passes": self.passes, "lines": self.counts["lines"], "ops": self.counts["ops"],
                "malformed": self.counts["malformed"], "unknown_op": self.counts["unknown_op"],
                "unknown_ops": dict(self.unknown_ops.most_common(10))}
