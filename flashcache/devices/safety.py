"""Format safety: recognise what a target already holds before flashcache writes to it.

Owns the signature table and the verdict only; opening and writing are the devices' job.
The surprise: a sparse, never-written file reads as zeros and counts as empty, and so does
any target whose probed areas are all zero.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from engines.device import SUPERBLOCK_MAGIC

# (name, byte offset, magic). Offsets from each format's documentation / blkid's probes.
SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("an ext2/3/4 filesystem", 0x438, b"\x53\xef"),
    ("an XFS filesystem", 0, b"XFSB"),
    ("a btrfs filesystem", 0x10040, b"_BHRfS_M"),
    ("an F2FS filesystem", 0x400, b"\x10\x20\xf5\xf2"),
    ("a LUKS encrypted volume", 0, b"LUKS\xba\xbe"),
    ("an LVM2 physical volume", 0x218, b"LVM2 001"),
    ("a Linux swap area", 4086, b"SWAPSPACE2"),
    ("a Linux swap area (old)", 4086, b"SWAP-SPACE"),
    ("a GPT partition table", 512, b"EFI PART"),
    ("a GPT partition table (4K sectors)", 4096, b"EFI PART"),
    ("a squashfs image", 0, b"hsqs"),
    ("an ISO 9660 image", 0x8001, b"CD001"),
    ("a bcache device", 0x1018, b"\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"),
    ("a ZFS label", 0x4000 + 0x3A000, b"\x0c\xb1\xba\x00"),
)
PROBE_BYTES = 0x48000  # covers every offset above (and a 256 KiB prefix for "non-empty")


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # "empty" | "flashcache" | "foreign"
    what: str  # human description


def classify(prefix: bytes) -> Verdict:
    """Classify a target from its first PROBE_BYTES bytes (shorter if the target is)."""
    if prefix.startswith(SUPERBLOCK_MAGIC):
        return Verdict("flashcache", "a flashcache device")
    for name, off, magic in SIGNATURES:
        if prefix[off:off + len(magic)] == magic:
            return Verdict("foreign", f"{name} (signature at byte {off:#x})")
    if len(prefix) >= 512 and prefix[510:512] == b"\x55\xaa" and any(prefix[446:510]):
        return Verdict("foreign", "an MBR partition table (signature 0x55AA at byte 0x1fe)")
    if not any(prefix):
        return Verdict("empty", "no data (all zero)")
    first = next(i for i, b in enumerate(prefix) if b)
    return Verdict("foreign", f"non-zero data that is not a flashcache device (first at byte {first:#x})")


def probe_fd(fd: int, size: int) -> Verdict:
    n = min(size, PROBE_BYTES)
    buf = os.pread(fd, n, 0) if n else b""
    return classify(buf)


def refuse_foreign(path: str, verdict: Verdict, fmt: bool, log) -> None:
    """Raise FormatError for a target holding something else unless ``fmt``; log if so."""
    from ..errors import FormatError
    if verdict.kind == "foreign" and not fmt:
        raise FormatError(
            f"{path}: holds {verdict.what}; flashcache will not overwrite it. "
            f"If you really want to use it as a cache, set format = true in the [device] table "
            f"of the config; all of its data will be lost")
    if verdict.kind == "foreign":
        log.warning("%s: held %s; overwriting it because format = true", path, verdict.what)


def check_device(dev, fmt: bool, log) -> None:
    """The same check through an open device's own reads (NVMe namespaces, which have no
    file descriptor to pread before the device exists)."""
    n = min(dev.size, PROBE_BYTES)
    n -= n % dev.block_size
    refuse_foreign(dev.path, classify(dev.read(0, n) if n else b""), fmt, log)
