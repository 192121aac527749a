"""One definition per on-flash format, checked at import (engines/formats.py): a C side that
disagrees with Python fails the import and names the field; the superblock's own format
and its version; and the rule that C never names a Python private attribute."""
from __future__ import annotations

import pathlib
import re
import struct
import subprocess
import sys

import msgpack
import pytest
import xxhash

from engines import formats, superblock
from engines.bighash import BUCKET_LAYOUT
from engines.bighash import ENTRY_LAYOUT as BH_ENTRY_LAYOUT
from engines.blockcache.entry import ENTRY_LAYOUT as BC_ENTRY_LAYOUT
from engines.device import SUPERBLOCK_MAGIC
from engines.navy import Navy
from tests.engines.memdevice import PidDevice

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_layout_is_its_struct():
    for lay in (BUCKET_LAYOUT, BH_ENTRY_LAYOUT, BC_ENTRY_LAYOUT, superblock.HEADER):
        offsets = [off for off, _ in lay.fields.values()]
        assert offsets == sorted(offsets) and offsets[0] == 0
        last_off, last_size = list(lay.fields.values())[-1]
        assert last_off + last_size == lay.size == lay.struct.size
    assert BC_ENTRY_LAYOUT.size == 52 and BUCKET_LAYOUT.size == 32 and BH_ENTRY_LAYOUT.size == 22


def test_check_names_the_field_that_differs():
    c = dict(BC_ENTRY_LAYOUT.fields)
    formats.check(BC_ENTRY_LAYOUT, c, "test")                      # agrees: no error
    with pytest.raises(formats.FormatMismatch, match=r"field 'expiry' is 4 B at offset 36 in Python but 4 B "
                                                     r"at offset 37 in test"):
        formats.check(BC_ENTRY_LAYOUT, {**c, "expiry": (37, 4)}, "test")
    with pytest.raises(formats.FormatMismatch, match="field 'flags' .* is missing from test"):
        formats.check(BC_ENTRY_LAYOUT, {k: v for k, v in c.items() if k != "flags"}, "test")
    with pytest.raises(formats.FormatMismatch, match="field 'extra' of test is not in the Python layout"):
        formats.check(BC_ENTRY_LAYOUT, {**c, "extra": (52, 2)}, "test")
    with pytest.raises(formats.FormatMismatch, match="KEY_SEED is 1 in Python but 2 in test"):
        formats.check(BC_ENTRY_LAYOUT, c, "test", {"KEY_SEED": (1, 2)})


# Load one engine's C module by itself, plant a wrong value in what it exports, then import
# the engine: its import-time check must fail and name what differs.
PLANT = """
import glob, importlib.util, sys
name = {module!r}
path = glob.glob({pattern!r})[0]
spec = importlib.util.spec_from_file_location(name, path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.modules[name] = mod
{plant}
import {engine}
"""


@pytest.mark.parametrize("module, pattern, plant, engine, names", [
    ("engines.blockcache._core_c", "engines/blockcache/_core_c*.so",
     "mod.ENTRY_FIELDS['value_len'] = (33, 4)", "engines.blockcache",
     ["BlockCache entry header", "'value_len'", "offset 32 in Python", "offset 33 in engines/blockcache/_core.c"]),
    ("engines.blockcache._core_c", "engines/blockcache/_core_c*.so",
     "mod.MAGIC = b'FCBX'", "engines.blockcache", ["BlockCache entry header", "magic"]),
    ("engines.bighash._core_c", "engines/bighash/_core_c*.so",
     "mod.BUCKET_FIELDS['item_count'] = (26, 4)", "engines.bighash",
     ["BigHash bucket header", "'item_count'", "offset 24 in Python", "offset 26 in engines/bighash/_bucket.h"]),
    ("engines.bighash._core_c", "engines/bighash/_core_c*.so",
     "mod.ENTRY_FIELDS['key_len'] = (20, 4)", "engines.bighash",
     ["BigHash entry header", "'key_len'", "2 B at offset 20 in Python but 4 B"]),
])
def test_a_planted_mismatch_fails_the_import_naming_the_field(module, pattern, plant, engine, names):
    code = PLANT.format(module=module, pattern=str(ROOT / pattern), plant=plant, engine=engine)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0, r.stdout
    assert "FormatMismatch" in r.stderr and "make setup" in r.stderr
    for text in names:
        assert text in r.stderr, r.stderr[-600:]
    clean = subprocess.run([sys.executable, "-c", PLANT.format(module=module, pattern=str(ROOT / pattern),
                                                               plant="", engine=engine)],
                           capture_output=True, text=True, cwd=ROOT)
    assert clean.returncode == 0, clean.stderr[-600:]            # the same load, nothing planted: fine


def test_no_c_file_names_a_python_private_attribute():
    """C owns its state and talks to Python through declared structs and documented
    methods: no string literal in the project's C (engines/ and flashcache/) starts with an
    underscore, except a method or member the C type defines itself (a ``{"_name", ...}``
    table row)."""
    literal = re.compile(r'"((?:\\.|[^"\\])*)"')
    own = re.compile(r'^\s*\{"')
    found = []
    files = sorted([*(ROOT / "engines").rglob("*.[ch]"), *(ROOT / "flashcache").rglob("*.[ch]")])
    assert len(files) >= 18
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if line.lstrip().startswith("#include") or "PyModuleDef" in line:   # the module's own name
                continue
            names = literal.findall(line)
            if own.match(line):
                names = names[1:]            # the row's own name: defined by this C, not Python's
            found += [f"{f.relative_to(ROOT)}:{n}: {m}" for m in names if m.startswith("_")]
    assert not found, found


# --------------------------------------------------------------------------- the superblock

def test_superblock_round_trip_and_checks():
    lay = {"version": superblock.FORMAT_VERSION, "device_size": 1 << 30, "block": 4096, "meta_end": 2 << 20,
           "engines": {"blockcache": {"offset": 2 << 20, "size": 900 << 20}, "bighash": {"offset": 902 << 20}}}
    sb = superblock.Superblock(superblock.fingerprint(lay), lay, {"blockcache": 7, "bighash": 2**64 - 1}, 100, 5)
    raw = sb.encode(4096)
    assert len(raw) == 4096 and raw[:8] == SUPERBLOCK_MAGIC
    assert superblock.Superblock.decode(raw) == sb
    bad = bytearray(raw)
    bad[superblock.HEADER.size + 3] ^= 1
    with pytest.raises(superblock.Unreadable, match="checksum mismatch"):
        superblock.Superblock.decode(bytes(bad))
    with pytest.raises(superblock.Unreadable, match="new device"):
        superblock.Superblock.decode(bytes(4096))
    with pytest.raises(ValueError, match="does not fit"):
        superblock.Superblock(1, {**lay, "pad": "x" * 5000}, {}).encode(4096)
    assert superblock.changes(lay, {**lay, "engines": {"blockcache": {"offset": 2 << 20, "size": 800 << 20}}}) == \
        [f"engines.blockcache.size {900 << 20} -> {800 << 20}", "engines.bighash removed"]


def test_a_version_1_superblock_is_another_format_and_the_cache_says_so():
    """Version 1 kept two engines' generations in fixed fields; version 2 records a list of
    engines. A device formatted by version 1 is reset, and the start says why."""
    dev = PidDevice(32 << 20, block_size=4096)
    old = struct.Struct("<8sHHIQQQQQI")
    layout = msgpack.packb({"version": 1, "device_size": dev.size}, use_bin_type=True)
    head = old.pack(SUPERBLOCK_MAGIC, 1, old.size, 0, 123, 5, 6, 0, 0, len(layout)) + layout
    dev.buf[:len(head) + 8] = head + struct.pack("<Q", xxhash.xxh64_intdigest(head, superblock.SEED))
    n = Navy(dev, region_size=1 << 20, bighash_fraction=0.25, small_item_max=1024)
    assert n.start == ("formatted: format changed, the cache was reset (superblock format version 1, "
                       "this code reads 2)")
    assert superblock.Superblock.decode(bytes(dev.buf[:4096])).fingerprint == n.fingerprint
