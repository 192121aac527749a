"""TOML configuration (a file, or a dict of the same shape) into typed, frozen dataclasses,
validated with errors that help.

Owns the schema (the dataclasses below, one per TOML table) and the loader; it opens no
device and starts nothing. Every error names the key (``device.size``), the bad value and
what is allowed; unknown keys get a did-you-mean; one ConfigError lists every problem of a
config. Relative paths in a file start at the file's folder, in a dict at the working
directory. The surprise: sizes are strings with binary units ("1GiB", "512MiB", "4KiB") or
plain integers of bytes; decimal units such as "1GB" are refused, because "GB" vs "GiB" is
the classic 7 % capacity mistake.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)(B|KiB|MiB|GiB|TiB)?$")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(key: str, value: Any) -> int:
    """``"1GiB"`` -> 1073741824. Integers are bytes."""
    if isinstance(value, bool):
        raise ConfigError(f'{key} = {value!r}: use a size like "1GiB" or "512MiB"')
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key} = {value}: a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            n = float(m.group(1)) * _UNITS[m.group(2)]
            if n != int(n):
                raise ConfigError(f'{key} = "{value}": not a whole number of bytes')
            return int(n)
    raise ConfigError(f'{key} = {_show(value)}: use a size like "1GiB" or "512MiB"')


def parse_duration(key: str, value: Any) -> float:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{key} = {value}: a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = re.match(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$", value)
        if m:
            return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    raise ConfigError(f'{key} = {_show(value)}: use a duration like "30s", "5m", "2h" or a number of seconds')


def _show(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def opt(doc: str, *, kind: str | None = None, choices: tuple | None = None,
        min: float | None = None, max: float | None = None, power_of_two: bool = False,
        check: Callable[[str, Any], None] | None = None) -> dict:
    """Field metadata: the doc line, and how to validate the value."""
    return {"doc": doc, "kind": kind, "choices": choices, "min": min, "max": max,
            "pow2": power_of_two, "check": check}


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    md = f.metadata
    kind = md.get("kind")
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "size":
        v: Any = parse_size(key, value)
    elif kind == "path":
        v = _path(key, value)
    elif kind == "duration":
        v = parse_duration(key, value)
    elif kind == "write_through":
        if not (isinstance(value, bool) or value == "sync"):
            raise ConfigError(f'{key} = {_show(value)}: use true, false or "sync" (true, and fdatasync before each '
                              "set or delete returns)")
        return value
    elif kind == "share_or_auto":
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f'{key} = {_show(value)}: use "auto" (sized from the items seen) or a share '
                              "from 0 to 1, e.g. 0.25")
        v = float(value)
    elif t.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {_show(value)}: use true or false")
        v = value
    elif t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {_show(value)}: use a whole number")
        v = value
    elif t.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {_show(value)}: use a number")
        v = float(value)
    elif t.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {_show(value)}: use a string in quotes")
        v = value
    else:  # pragma: no cover - schema bug
        raise TypeError(f"config field {key} has unsupported type {t}")
    choices = md.get("choices")
    if choices and v not in choices:
        near = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
        hint = f' (did you mean "{near[0]}"?)' if near else ""
        raise ConfigError(f"{key} = {_show(value)}: must be one of "
                          + ", ".join(_show(c) for c in choices) + hint)
    lo, hi = md.get("min"), md.get("max")
    if lo is not None and v < lo:
        raise ConfigError(f"{key} = {_show(value)}: must be at least {lo}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key} = {_show(value)}: must be at most {hi}")
    if md.get("pow2") and (v <= 0 or v & (v - 1)):
        raise ConfigError(f"{key} = {_show(value)}: must be a power of two (e.g. 512, 4096)")
    if md.get("check"):
        md["check"](key, v)
    return v


def _path(key: str, value: Any) -> str:
    if isinstance(value, os.PathLike):      # a dict config may hold a pathlib.Path
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} = {_show(value)}: use a path as a string in quotes")
    if not value:
        raise ConfigError(f'{key} = "": give a file or device path')
    return value


def build(cls: type, table: Mapping[str, Any], prefix: str, errors: list[str]) -> Any:
    """Build dataclass ``cls`` from a table, validating every key; each problem is appended
    to ``errors`` (then the result is None). A table's ``validate()``, which judges its
    values together, runs only when each of them is good on its own."""
    if not isinstance(table, Mapping):
        errors.append(f"{prefix} = {_show(table)}: must be a table ([{prefix}])")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    before = len(errors)
    kwargs = {}
    for name, value in table.items():        # in the file's order, so errors are too
        key = f"{prefix}.{name}" if prefix else str(name)
        f = fields.get(name)
        if f is None:
            near = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f'; did you mean "{near[0]}"?' if near else ""
            errors.append(f"{key}: unknown key{hint} (known keys here: {', '.join(sorted(fields))})")
            continue
        sub = f.metadata.get("section")
        if sub:
            kwargs[name] = build(sub, value, key, errors)
            continue
        try:
            kwargs[name] = _coerce(key, f, value)
        except ConfigError as e:
            errors.extend(e.errors)
    if len(errors) > before:
        return None
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if post:
        try:
            post(prefix)
        except ConfigError as e:
            errors.extend(e.errors)
            return None
    return obj


def section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"section": cls, "doc": doc})


# --- the schema -------------------------------------------------------------------------

def _check_handle_types(key: str, v: str) -> None:
    if v and v not in ("II", "PI"):
        raise ConfigError(f'{key} = "{v}": use "II" (initially isolated), "PI" (persistently isolated) '
                          'or "" for the preset\'s')


def _presets() -> tuple[str, ...]:
    from .emulator.geometry import PRESETS
    return tuple(PRESETS)


@dataclass(frozen=True)
class EmulatorConfig:
    """[device.emulator]: the emulated FDP SSD's shape (a preset, with overrides)."""

    capacity: int = field(default=0, metadata=opt(
        'exported capacity of the emulated SSD ("1GiB"); 0 = device.size, or the preset\'s when that is 0 too. '
        "Set it with device.size or device.utilization to give the cache only part of the drive",
        kind="size"))
    preset: str = field(default="qemu-like", metadata=opt(
        "geometry preset: paper-1.88tb-scaled (8 II handles, 1 RG, 24 MiB RUs, 7 % OP), "
        "qemu-like (8 II handles, 8 MiB RUs, 12 % OP), small-test (4 handles, 1 MiB RUs)",
        choices=_presets()))
    fdp: bool = field(default=True, metadata=opt(
        "FDP enabled; false emulates a conventional SSD (one write frontier, the baseline of every comparison)"))
    op: float = field(default=0.0, metadata=opt(
        "over-provisioning as (physical - exported) / exported, e.g. 0.07; 0 = the preset's", min=0.0, max=10.0))
    ru_size: int = field(default=0, metadata=opt(
        'reclaim unit size ("24MiB"), the GC unit; 0 = the preset\'s', kind="size"))
    handles: int = field(default=0, metadata=opt(
        "reclaim unit handles (placement handles); 0 = the preset's", min=0, max=128))
    handle_type: str = field(default="", metadata=opt(
        'type of every handle: "II" initially or "PI" persistently isolated; "" = the preset\'s',
        check=_check_handle_types))
    reclaim_groups: int = field(default=0, metadata=opt("reclaim groups; 0 = the preset's", min=0, max=256))
    # 4096 rather than "the preset's": qemu-like's is QEMU's 512, and config/default.toml,
    # which must describe the same device as these defaults, has always used 4 KiB.
    lba_size: int = field(default=4096, metadata=opt(
        "logical block size, 512 or 4096; 0 = the preset's (qemu-like: 512, as QEMU)", choices=(0, 512, 4096)))
    gc_policy: str = field(default="", metadata=opt(
        'victim selection: "greedy", "fifo" or "cost-benefit"; "" = the preset\'s',
        choices=("", "greedy", "fifo", "cost-benefit")))
    gc_reserve: int = field(default=0, metadata=opt(
        "free reclaim units GC keeps in reserve per group; 0 = the preset's", min=0, max=1024))
    check_invariants: bool = field(default=False, metadata=opt(
        "debug: check every FTL invariant after each GC (slow: a full scan per GC)"))

    def geometry(self, capacity_bytes: int, key: str = "device.emulator", given_as: str = "device.size"):
        """The Geometry this table describes, for an exported capacity (0 = the preset's);
        ``given_as`` names the option the capacity came from, for errors."""
        from .emulator.geometry import preset
        over: dict[str, Any] = {"fdp": self.fdp}
        if capacity_bytes:
            over["capacity_bytes"] = capacity_bytes
        if self.op:
            over["op"] = self.op
        if self.ru_size:
            over["ru_bytes"] = self.ru_size
        if self.handles or self.handle_type:
            base = preset(self.preset)
            over["handles"] = (self.handle_type or base.handles[0],) * (self.handles or len(base.handles))
        if self.reclaim_groups:
            over["nrg"] = self.reclaim_groups
        if self.lba_size:
            over["lba_size"] = self.lba_size
        if self.gc_policy:
            over["gc_policy"] = self.gc_policy
        if self.gc_reserve:
            over["gc_reserve_rus"] = self.gc_reserve
        try:
            return preset(self.preset, **over)
        except ValueError as e:
            raise ConfigError(f"[{key}] with {given_as} = {capacity_bytes or 'the preset capacity'}: {e}") from None


@dataclass(frozen=True)
class DeviceConfig:
    kind: str = field(default="emulated", metadata=opt(
        "which device: emulated (the built-in emulated FDP SSD, data in a sparse file), "
        "file (a regular file or a block device), nvme (an NVMe namespace through io_uring passthrough)",
        choices=("emulated", "file", "nvme")))
    path: str = field(default="var/flashcache.img", metadata=opt(
        "file or block device (file), backing file (emulated; its FTL state goes to PATH.ftl), "
        "or NVMe device (nvme: /dev/ngXnY, /dev/nvmeXnY or a partition); a relative path starts at "
        "the config file's folder (in a dict, or this default, at the working directory)", kind="path"))
    size: int = field(default=0, metadata=opt(
        'bytes the cache may use ("1GiB"); 0 = the whole device, existing file or emulator preset. '
        "kind = emulated without emulator.capacity: also the emulated SSD's exported capacity", kind="size"))
    utilization: float = field(default=1.0, metadata=opt(
        "nvme and emulated: share of the device (of device.size, else of the whole device) the cache uses, "
        "e.g. 0.5 as the 50 % runs of FDP papers; the cache never writes the rest, and deallocates it once "
        "when it formats the device, so the drive holds it as spare", min=0.0, max=1.0))
    engine: str = field(default="uring", metadata=opt(
        "I/O engine for kind = file: uring (io_uring, batched) or psync (pread/pwrite)",
        choices=("uring", "psync")))
    direct: bool = field(default=False, metadata=opt("kind = file: open with O_DIRECT (bypass the page cache)"))
    block_size: int = field(default=4096, metadata=opt(
        "kind = file: device block size in bytes; all I/O is aligned to it (nvme and emulated use the LBA size)",
        min=512, max=65536, power_of_two=True))
    format: bool = field(default=False, metadata=opt(
        "allow overwriting a target that holds something else (a filesystem, a partition table, foreign data)"))
    queue_depth: int = field(default=64, metadata=opt("io_uring ring entries", min=1, max=32768))
    placement: bool = field(default=True, metadata=opt(
        "nvme and emulated: tag each engine's writes with its own FDP placement identifier; "
        "false sends no directives (placement is then reported off, with this reason)"))
    emulator: EmulatorConfig = section(EmulatorConfig, "the emulated FDP SSD (device.kind = \"emulated\")")

    def validate(self, prefix: str) -> None:
        problems = []
        if self.utilization <= 0:
            problems.append(f"{prefix}.utilization = {self.utilization:g}: use a share above 0, up to 1 "
                            "(e.g. 0.5 for half the device)")
        if self.kind == "file" and self.utilization < 1:
            problems.append(f"{prefix}.utilization = {self.utilization:g}: kind = \"file\" has no spare to "
                            "leave to a drive; set device.size instead (utilization is for nvme and emulated)")
        if self.kind == "emulated":
            cap = self.emulator.capacity
            if cap and self.size > cap:
                problems.append(f"{prefix}.size = {self.size}: larger than the emulated SSD "
                                f"({prefix}.emulator.capacity = {cap}); lower it or leave it out")
            try:
                self.emulator.geometry(cap or self.size, f"{prefix}.emulator",
                                       f"{prefix}.emulator.capacity" if cap else f"{prefix}.size")
            except ConfigError as e:
                problems.extend(e.errors)
        if problems:
            raise ConfigError(*problems)

    def emulated_capacity(self) -> int:
        """kind = emulated: the exported capacity asked for (0: the preset's)."""
        return self.emulator.capacity or self.size


@dataclass(frozen=True)
class AdmissionConfig:
    """[cache.admission]: which items evicted from DRAM are written to flash."""

    policy: str = field(default="accept-all", metadata=opt(
        "accept-all; random (with probability); dynamic-random (holds target_write_rate); "
        "reject-first (admit a key on its second eviction within a window)",
        choices=("accept-all", "random", "dynamic-random", "reject-first")))
    probability: float = field(default=1.0, metadata=opt("policy = random: admission probability", min=0.0, max=1.0))
    target_write_rate: int = field(default=0, metadata=opt(
        'policy = dynamic-random: device bytes per second to hold ("50MiB")', kind="size"))
    window_keys: int = field(default=1 << 20, metadata=opt(
        "policy = reject-first: keys remembered per window", min=1, max=1 << 30))

    def validate(self, prefix: str) -> None:
        if self.policy == "dynamic-random" and not self.target_write_rate:
            raise ConfigError(f'{prefix}.target_write_rate = 0: policy "dynamic-random" needs a rate, '
                              'e.g. target_write_rate = "50MiB" (bytes per second)')


@dataclass(frozen=True)
class FlashConfig:
    """[cache.flash]: the flash engines and their layout on the device."""

    small_item_max: int = field(default=2048, metadata=opt(
        'key + value bytes up to which an item goes to BigHash ("2KiB"); larger ones to BlockCache',
        kind="size"))
    bighash_fraction: float | str = field(default="auto", metadata=opt(
        'share of the flash space for BigHash (0: none, 1: no BlockCache), or "auto": the small items\' '
        "byte share as this device has seen it, followed while the cache runs (README, \"The split\")",
        kind="share_or_auto"))
    split_every: int = field(default=32, metadata=opt(
        'with bighash_fraction = "auto": inserts between two steps of the moving split (each step grows '
        "BigHash by at most one bucket: one read, two bucket writes); 0: the split moves only when the cache "
        "formats", min=0, max=1 << 30))
    split_waf_limit: float = field(default=0.0, metadata=opt(
        'with bighash_fraction = "auto": the device WAF BigHash\'s random bucket rewrites may cost; "auto" then '
        "gives BigHash at most the share the device's spare area absorbs within it (README, \"The split\"; "
        "only a device that reports its spare area, the emulated SSD). 0: no limit", min=0.0, max=100.0))
    bucket_size: int = field(default=4096, metadata=opt(
        "BigHash bucket size in bytes", min=512, max=1 << 20, power_of_two=True))
    bloom_bytes_per_bucket: int = field(default=8, metadata=opt(
        "BigHash bloom filter bytes per bucket (0: no filters)", min=0, max=4096))
    region_size: int = field(default=16 << 20, metadata=opt(
        'BlockCache region size ("16MiB"): the unit of its writes and evictions', kind="size"))
    alignment: int = field(default=512, metadata=opt(
        "BlockCache entry alignment in bytes", min=512, max=4096, power_of_two=True))
    clean_regions: int = field(default=1, metadata=opt("BlockCache regions kept clean and ready", min=1, max=1024))
    eviction: str = field(default="fifo", metadata=opt(
        "BlockCache region eviction: fifo, lru or sfifo (segmented FIFO)", choices=("fifo", "lru", "sfifo")))
    reinsertion_hits: int = field(default=0, metadata=opt(
        "re-append items read at least this often when their region is evicted (0: off)", min=0, max=255))
    reinsertion_percent: int = field(default=0, metadata=opt(
        "re-append this percentage of an evicted region's items (0: off)", min=0, max=100))
    trim_on_reclaim: bool = field(default=False, metadata=opt("deallocate (TRIM) each BlockCache region before reuse"))
    metadata_fraction: float = field(default=0.01, metadata=opt(
        "share of the device kept for checkpoints and warm-restart metadata (at least 1 MiB; two slots of half "
        "each: a checkpoint that does not fit its slot is skipped with a warning, and the next crash replays "
        "from the last one that fit, or starts BlockCache cold)", min=0.001, max=0.4))
    checkpoint_regions: int = field(default=4, metadata=opt(
        "checkpoint BlockCache's index every this many sealed regions, so a crash replays at most about as "
        "many (0: only by time, at close and before reclaiming an unsaved region)", min=0, max=1 << 20))
    checkpoint_seconds: float = field(default=60.0, metadata=opt(
        "checkpoint BlockCache's index at a region seal when this long (\"60s\") has passed since the last "
        "one (0: only by regions)", kind="duration", min=0.0))


@dataclass(frozen=True)
class CacheConfig:
    """[cache]: the DRAM tier and what goes to flash."""

    dram_size: int = field(default=64 << 20, metadata=opt(
        'DRAM item tier budget ("64MiB"); every item is charged key + value + ~200 B of overhead',
        kind="size"))
    write_through: bool | str = field(default=False, metadata=opt(
        "write every set to flash at once (default: on DRAM eviction, as CacheLib's hybrid cache does); "
        '"sync": that, and fdatasync before each set or delete returns (survives a power loss)',
        kind="write_through"))
    default_ttl: float = field(default=0.0, metadata=opt(
        'time to live when set() gives none ("1h"); 0 = items never expire', kind="duration"))
    max_key_size: int = field(default=4096, metadata=opt("largest key in bytes", min=1, max=65535))
    async_reads: str = field(default="auto", metadata=opt(
        "how AsyncCache (and the server) read flash: ring (io_uring, completed on the event loop), inline "
        "(a blocking read on the loop: right where a read is a memory copy), or auto: inline where the "
        "device says its reads are memory copies (the emulated SSD), else ring (README, \"AsyncCache\")",
        choices=("auto", "ring", "inline")))
    waf_window: float = field(default=60.0, metadata=opt(
        'device WAF is reported over this sliding window ("60s") and since open', kind="duration"))
    flash: FlashConfig = section(FlashConfig, "the flash engines")
    admission: AdmissionConfig = section(AdmissionConfig, "flash admission")


def _check_host(key: str, v: str) -> None:
    import ipaddress
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ConfigError(f'{key} = "{v}": use an IP address such as "127.0.0.1" or "::1"') from None


@dataclass(frozen=True)
class ServerConfig:
    """[server]: `flashcache serve`, the memcached-protocol server, and its metrics endpoint."""

    listen: str = field(default="127.0.0.1", metadata=opt(
        "address to listen on; anything but loopback also needs allow_remote = true", check=_check_host))
    port: int = field(default=11211, metadata=opt("TCP port (memcached's)", min=1, max=65535))
    allow_remote: bool = field(default=False, metadata=opt(
        "allow a listen address other than loopback (the server has no authentication: firewall it)"))
    max_connections: int = field(default=4096, metadata=opt(
        "connections served at once; one more is answered \"ERROR Too many open connections\" and closed",
        min=1, max=1 << 20))
    idle_timeout: float = field(default=600.0, metadata=opt(
        'close a connection idle this long ("10m"); 0 = never', kind="duration"))
    item_size_max: int = field(default=1 << 20, metadata=opt(
        'largest value ("1MiB", memcached\'s default); up to what the flash engines take', kind="size"))
    read_buffer: int = field(default=1 << 20, metadata=opt(
        'request bytes buffered per connection while a request is in progress before reading pauses ("1MiB")',
        kind="size"))
    write_buffer: int = field(default=1 << 20, metadata=opt(
        'reply bytes queued per connection before the server stops reading from it (a slow reader) ("1MiB")',
        kind="size"))
    strict_keys: bool = field(default=True, metadata=opt(
        "refuse keys with control characters (memcached protocol.txt's rule); false accepts them as memcached "
        "1.6 does (memaslap sends such keys)"))
    accelerate: bool = field(default=True, metadata=opt(
        "answer get/gets DRAM hits and plain sets (exptime 0) in C (flashcache/_server.c), the rest in Python; "
        "false runs every request through the Python path (the reference the C is tested against)"))
    send_thread: bool = field(default=True, metadata=opt(
        "send replies from a writer thread beside the event loop (flashcache/server/_sender.c), so the "
        "socket sends run on another core; false sends from the loop"))
    max_line: int = field(default=64 << 10, metadata=opt(
        'longest command line (a multi-key get); a longer one closes the connection ("64KiB")', kind="size"))
    swallow_max: int = field(default=64 << 20, metadata=opt(
        "a storage command declaring a value over item_size_max gets SERVER_ERROR and its data is read and "
        'dropped up to this many bytes; a larger declared length also closes the connection ("64MiB")',
        kind="size"))
    drain_timeout: float = field(default=10.0, metadata=opt(
        'on SIGTERM/SIGINT, wait this long for requests in flight before closing ("10s")', kind="duration"))
    metrics_listen: str = field(default="127.0.0.1", metadata=opt(
        "address of the Prometheus /metrics endpoint (same allow_remote rule)", check=_check_host))
    metrics_port: int = field(default=9150, metadata=opt("port of the /metrics endpoint; 0 = off", min=0, max=65535))

    def validate(self, prefix: str) -> None:
        import ipaddress
        for k in ("listen", "metrics_listen"):
            v = getattr(self, k)
            if not ipaddress.ip_address(v).is_loopback and not self.allow_remote:
                raise ConfigError(f'{prefix}.{k} = "{v}" is not a loopback address: set {prefix}.allow_remote = '
                                  "true to serve other machines (there is no authentication: firewall the port)")


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata=opt(
        "log level", choices=("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = section(DeviceConfig, "the storage device")
    cache: CacheConfig = section(CacheConfig, "the cache: DRAM tier, flash engines, admission")
    server: ServerConfig = section(ServerConfig, "the memcached-protocol server (flashcache serve)")
    log: LogConfig = section(LogConfig, "logging")
    source: str = field(default="<defaults>", compare=False, metadata=opt("where this config came from"))


def from_dict(data: Mapping[str, Any], source: str = "<dict>", base_dir: str | Path | None = None) -> Config:
    """A Config from a dict shaped like the TOML file, validated as a file is::

        from_dict({"device": {"kind": "emulated", "path": "var/c.img", "size": "1GiB"},
                   "cache": {"dram_size": "64MiB"}})

    Raises one ConfigError listing every problem, each as ``"<source>: key = value: what to
    do"``. Relative paths (every option of kind "path": ``device.path``) start at
    ``base_dir`` when given (``load`` passes the file's folder); without it they stay as
    written, so they start at the working directory when the cache opens.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the config is a {type(data).__name__}; give a dict of tables like "
                          '{"device": {"kind": "emulated", "size": "1GiB"}, "cache": {...}}')
    errors: list[str] = []
    cfg = build(Config, data, "", errors)
    if errors:
        raise ConfigError(*(f"{source}: {e}" for e in errors))
    if base_dir is not None:
        cfg = _resolve_paths(cfg, os.path.abspath(base_dir))
    return dataclasses.replace(cfg, source=source)


def _resolve_paths(obj: Any, base_dir: str) -> Any:
    """``obj`` with each relative path-valued option joined to ``base_dir``."""
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.metadata.get("section"):
            nv = _resolve_paths(v, base_dir)
        elif f.metadata.get("kind") == "path" and not os.path.isabs(v):
            nv = os.path.normpath(os.path.join(base_dir, v))
        else:
            continue
        if nv is not v:
            changes[f.name] = nv
    return dataclasses.replace(obj, **changes) if changes else obj


def loads(text: str, source: str = "<string>", base_dir: str | Path | None = None) -> Config:
    """Parse TOML text into a Config (see ``from_dict``; ``load`` for a file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return from_dict(data, source, base_dir)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file; errors name the file and the key, all of
    them at once. Relative paths in it start at the file's folder, not the working
    directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found; the examples are in config/ (config/default.toml)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    return loads(text, str(p), base_dir=p.parent)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every option: the reference for docs and `flashcache config`."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        sub = f.metadata.get("section")
        if sub:
            rows += describe(sub, key)
        else:
            rows.append((key, repr(f.default), f.metadata.get("doc", "")))
    return rows
