"""The engine tests' device: a tiny in-memory device that honours the Device protocol
(aligned offsets and lengths, batched forms, streams) and logs every request."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MemStream:
    name: str
    pid: int | None = None
    placement: str = "off: in-memory test device"


class MemDevice:
    """A bytearray with the Device protocol's methods; ``log`` records (op, offset, length)."""

    def __init__(self, size: int, block_size: int = 512, max_io: int = 1 << 20) -> None:
        self.path = "mem"
        self.size = size
        self.block_size = block_size
        self.max_io = max_io
        self.buf = bytearray(size)
        self.log: list[tuple[str, int, int]] = []
        self.streams: list[object] = []

    def _check(self, offset: int, length: int) -> None:
        if offset % self.block_size or length % self.block_size:
            raise ValueError(f"mem device: offset {offset} / length {length} not aligned to {self.block_size}")
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"mem device: [{offset}, {offset + length}) outside 0..{self.size}")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        self.log.append(("read", offset, length))
        return bytes(self.buf[offset:offset + length])

    def write(self, offset: int, data, stream=None) -> None:
        self._check(offset, len(data))
        self.log.append(("write", offset, len(data)))
        self.streams.append(stream)
        self.buf[offset:offset + len(data)] = data

    def trim(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self.log.append(("trim", offset, length))
        self.buf[offset:offset + length] = bytes(length)

    def read_many(self, reqs):
        return [self.read(o, n) for o, n in reqs]

    def write_many(self, reqs) -> None:
        for o, d, s in reqs:
            self.write(o, d, s)

    def open_stream(self, name: str) -> MemStream:
        return MemStream(name)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class PidDevice(MemDevice):
    """A MemDevice whose streams get placement identifiers, like an FDP drive."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.next_pid = 1

    def open_stream(self, name):
        s = MemStream(name, pid=self.next_pid, placement="on")
        self.next_pid += 1
        return s
