"""On-flash formats declared once, and the import-time check that C and Python agree.

Owns ``Layout`` (a fixed little-endian header described as named fields, from which its
``struct.Struct`` and its offset table are built) and ``check``: compare a layout, and its
constants, with what the C side exports, raising ``FormatMismatch`` (an ImportError) that
names the first field that differs. Knows no format itself: each engine declares its own
beside its code. The surprise: the C side's table is built in C from the very constants
its code reads and writes with, so it cannot drift from the C code; this check stops it
drifting from Python, at import rather than on the first corrupt-looking read.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping, Sequence


class FormatMismatch(ImportError):
    """The C and Python definitions of an on-flash format disagree (a stale build or an
    edit to one side only): the message names the format, the field and both values."""


class Layout:
    """A fixed header: ``fields`` are (name, struct code) pairs in on-flash order,
    little-endian with no padding. ``struct`` packs and unpacks it; ``fields`` maps each
    name to (offset, size) in bytes."""

    def __init__(self, what: str, fields: Sequence[tuple[str, str]]) -> None:
        self.what = what
        self.names = tuple(name for name, _ in fields)
        self.struct = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self.struct.size
        table: dict[str, tuple[int, int]] = {}
        at = 0
        for name, code in fields:
            size = struct.calcsize("<" + code)
            table[name] = (at, size)
            at += size
        self.fields = table

    def offset(self, name: str) -> int:
        return self.fields[name][0]

    def __repr__(self) -> str:
        return f"Layout({self.what!r}, {self.size} B: {', '.join(self.names)})"


def check(layout: Layout, c_fields: Mapping[str, Any], c_source: str,
          constants: Mapping[str, tuple[Any, Any]] | None = None) -> None:
    """Raise FormatMismatch unless ``c_fields`` (name -> (offset, size), exported by
    ``c_source``) holds exactly ``layout``'s fields at the same offsets and sizes, and each
    of ``constants`` (name -> (Python value, C value)) agrees."""
    fix = "fix one side to match the other, then rebuild (`make setup`)"
    for name, (offset, size) in layout.fields.items():
        got = c_fields.get(name)
        if got is None:
            raise FormatMismatch(f"{layout.what}: field {name!r} ({size} B at offset {offset} in Python) is "
                                 f"missing from {c_source}; {fix}")
        if tuple(got) != (offset, size):
            raise FormatMismatch(f"{layout.what}: field {name!r} is {size} B at offset {offset} in Python but "
                                 f"{got[1]} B at offset {got[0]} in {c_source}; {fix}")
    for name in c_fields:
        if name not in layout.fields:
            raise FormatMismatch(f"{layout.what}: field {name!r} of {c_source} is not in the Python layout; {fix}")
    for name, (py, c) in (constants or {}).items():
        if py != c:
            raise FormatMismatch(f"{layout.what}: {name} is {py!r} in Python but {c!r} in {c_source}; {fix}")
