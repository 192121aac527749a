"""A workload described in TOML: keys, popularity, sizes, the op mix, TTLs, cache-aside.

Owns the schema and its validation (every problem listed at once, each naming the key,
as flashcache.config does); it generates nothing (generator.py does). The surprise: the
number of keys may be given relative to the cache (``working_set``, a multiple of the
cache's flash bytes), so one preset means the same pressure on a 64 MiB test device and
on a 1.88 TB drive; ``bind`` turns it into a key count once the cache size is known.

    [workload]
    seed = 1
    working_set = 2.0            # or keys = 1000000
    popularity = "zipf"          # or "uniform"
    zipf_alpha = 0.9
    rate = 100000                # ops per (virtual) second: the cache's clock, for TTLs
    cache_aside = true           # a get that misses is followed by a set
    ops = {get = 0.8, set = 0.2, delete = 0.0}
    key_size = {range = [16, 32]}
    value_size = {mixture = [{weight = 0.6, range = [50, 500]},
                             {weight = 0.4, range = ["2500B", "16000B"]}]}
    ttl = {fixed = 0}            # seconds, or "5m"; 0 = never expires

A size or TTL distribution is ``{fixed = x}``, ``{range = [lo, hi]}`` (uniform, both
ends included) or ``{mixture = [{weight = w, fixed|range = ...}, ...]}``.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import _show, parse_duration, parse_size
from ..errors import ConfigError

PRESETS_DIR = Path(__file__).with_name("presets")
OPS = ("get", "set", "delete")


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.1%}"


def _seconds(x: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if x >= n and x % n == 0:
            return f"{x / n:g} {unit}"
    return f"{x:g} s"


@dataclass(frozen=True)
class Dist:
    """A distribution of whole numbers: components (weight, lo, hi), lo..hi uniform."""

    parts: tuple[tuple[float, float, float], ...]

    @property
    def mean(self) -> float:
        total = sum(w for w, _, _ in self.parts)
        return sum(w * (lo + hi) / 2 for w, lo, hi in self.parts) / total

    @property
    def max(self) -> float:
        return max(hi for _, _, hi in self.parts)

    @property
    def min(self) -> float:
        return min(lo for _, lo, _ in self.parts)

    def describe(self, unit: str = "") -> str:
        show = _seconds if unit == " s" else (lambda x: f"{x:g}{unit}")

        def one(lo: float, hi: float) -> str:
            return show(lo) if lo == hi else f"{show(lo).removesuffix(unit)}-{show(hi)}"
        if len(self.parts) == 1:
            return "none" if unit == " s" and self.max == 0 else one(*self.parts[0][1:])
        total = sum(w for w, _, _ in self.parts)
        return " | ".join(f"{_pct(w / total)} {one(lo, hi)}" for w, lo, hi in self.parts)

    def as_toml(self) -> dict[str, Any]:
        def one(lo: float, hi: float) -> dict[str, Any]:
            return {"fixed": lo} if lo == hi else {"range": [lo, hi]}
        if len(self.parts) == 1:
            return one(*self.parts[0][1:])
        return {"mixture": [{"weight": w, **one(lo, hi)} for w, lo, hi in self.parts]}


@dataclass(frozen=True)
class WorkloadSpec:
    """A validated workload (see the module docstring for the TOML)."""

    name: str = "custom"
    seed: int = 1
    keys: int = 0                       # distinct keys; 0: from working_set when bound
    working_set: float = 2.0            # keys' item bytes over the cache's flash bytes
    popularity: str = "zipf"
    zipf_alpha: float = 0.9
    rate: float = 100_000.0
    cache_aside: bool = True
    ops: tuple[float, float, float] = (0.8, 0.2, 0.0)     # get, set, delete
    key_size: Dist = field(default_factory=lambda: Dist(((1.0, 16, 16),)))
    value_size: Dist = field(default_factory=lambda: Dist(((1.0, 100, 100),)))
    ttl: Dist = field(default_factory=lambda: Dist(((1.0, 0, 0),)))
    source: str = "<defaults>"

    def bind(self, cache_bytes: int) -> "WorkloadSpec":
        """This workload with ``keys`` set: as given, or enough keys for their items to
        total ``working_set`` times ``cache_bytes``."""
        if self.keys:
            return self
        item = self.key_size.mean + self.value_size.mean
        return dataclasses.replace(self, keys=max(1, int(self.working_set * cache_bytes / item)))

    def describe(self) -> str:
        pop = f"Zipf {self.zipf_alpha:g}" if self.popularity == "zipf" else "uniform"
        keys = f"{self.keys:,} keys" if self.keys else f"keys for {self.working_set:g}x the cache"
        mix = ", ".join(f"{n} {_pct(p)}" for n, p in zip(OPS, self.ops) if p)
        return (f"{self.name}: {keys}, {pop}, {mix}{', cache-aside' if self.cache_aside else ''}; "
                f"key {self.key_size.describe(' B')}, value {self.value_size.describe(' B')}, "
                f"TTL {self.ttl.describe(' s')}; seed {self.seed}")

    def as_dict(self) -> dict[str, Any]:
        """The TOML shape of this spec (for reports: every setting, after defaults)."""
        return {"name": self.name, "seed": self.seed, "keys": self.keys, "working_set": self.working_set,
                "popularity": self.popularity, "zipf_alpha": self.zipf_alpha, "rate": self.rate,
                "cache_aside": self.cache_aside, "ops": dict(zip(OPS, self.ops)),
                "key_size": self.key_size.as_toml(), "value_size": self.value_size.as_toml(),
                "ttl": self.ttl.as_toml(), "source": self.source}


# -- parsing ---------------------------------------------------------------------------------

def _near(name: Any, options) -> str:
    near = difflib.get_close_matches(str(name), list(options), n=1)
    return f'; did you mean "{near[0]}"?' if near else ""


def _number(key: str, v: Any, parse: Callable[[str, Any], float]) -> float:
    if isinstance(v, float) and not isinstance(v, bool) and parse is parse_size:
        if v != int(v) or v < 0:
            raise ConfigError(f"{key} = {_show(v)}: use a whole number of bytes")
        v = int(v)
    return float(parse(key, v))


def parse_dist(key: str, table: Any, parse: Callable[[str, Any], float], errors: list[str]) -> Dist | None:
    """``{fixed = x}``, ``{range = [lo, hi]}`` or ``{mixture = [...]}``; problems go to ``errors``."""
    if isinstance(table, (int, float, str)) and not isinstance(table, bool):
        table = {"fixed": table}
    if not isinstance(table, Mapping):
        errors.append(f"{key} = {_show(table)}: use {{fixed = n}}, {{range = [lo, hi]}} or {{mixture = [...]}}")
        return None
    kinds = [k for k in ("fixed", "range", "mixture") if k in table]
    unknown = [k for k in table if k not in ("fixed", "range", "mixture", "weight")]
    for k in unknown:
        errors.append(f"{key}.{k}: unknown key{_near(k, ('fixed', 'range', 'mixture'))} "
                      "(use fixed, range or mixture)")
    if len(kinds) != 1:
        if not unknown:
            errors.append(f"{key}: give exactly one of fixed, range or mixture (got {', '.join(kinds) or 'none'})")
        return None
    kind = kinds[0]
    try:
        if kind == "fixed":
            x = _number(f"{key}.fixed", table["fixed"], parse)
            return Dist(((1.0, x, x),))
        if kind == "range":
            r = table["range"]
            if not isinstance(r, list) or len(r) != 2:
                raise ConfigError(f"{key}.range = {_show(r)}: use [low, high]")
            lo, hi = (_number(f"{key}.range", x, parse) for x in r)
            if lo > hi:
                raise ConfigError(f"{key}.range = {_show(r)}: low is above high")
            return Dist(((1.0, lo, hi),))
    except ConfigError as e:
        errors.extend(e.errors)
        return None
    parts = table["mixture"]
    if not isinstance(parts, list) or not parts:
        errors.append(f"{key}.mixture: use a list of {{weight = w, fixed = n}} or {{weight = w, range = [lo, hi]}}")
        return None
    out = []
    before = len(errors)
    for i, p in enumerate(parts):
        k = f"{key}.mixture[{i}]"
        if not isinstance(p, Mapping) or "mixture" in p:
            errors.append(f"{k}: use {{weight = w, fixed = n}} or {{weight = w, range = [lo, hi]}}")
            continue
        w = p.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0:
            errors.append(f"{k}.weight = {_show(w)}: use a number above 0")
            continue
        d = parse_dist(k, {x: y for x, y in p.items() if x != "weight"}, parse, errors)
        if d is not None:
            out.append((float(w), *d.parts[0][1:]))
    return Dist(tuple(out)) if len(errors) == before else None


_SCALARS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "name": (str, lambda v: bool(v), "a non-empty string"),
    "seed": (int, lambda v: v >= 0, "a whole number >= 0"),
    "keys": (int, lambda v: v >= 0, "a whole number of keys >= 0 (0: from working_set)"),
    "working_set": (float, lambda v: v > 0, "a multiple of the cache's flash bytes above 0, e.g. 2.0"),
    "popularity": (str, lambda v: v in ("zipf", "uniform"), '"zipf" or "uniform"'),
    "zipf_alpha": (float, lambda v: 0 <= v <= 5, "a number from 0 to 5, e.g. 0.9"),
    "rate": (float, lambda v: v > 0, "operations per (virtual) second above 0"),
    "cache_aside": (bool, lambda v: True, "true or false"),
}


def from_dict(data: Mapping[str, Any], source: str = "<dict>") -> WorkloadSpec:
    """A WorkloadSpec from the ``[workload]`` table (or a dict holding one under
    "workload"); one ConfigError lists every problem."""
    table = data.get("workload", data) if isinstance(data, Mapping) else data
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: a workload is a table: [workload] with seed, keys, ops, ...")
    errors: list[str] = []
    kw: dict[str, Any] = {"source": source}
    known = set(_SCALARS) | {"ops", "key_size", "value_size", "ttl"}
    for name, value in table.items():
        key = f"workload.{name}"
        if name not in known:
            errors.append(f"{key}: unknown key{_near(name, sorted(known))} "
                          f"(known keys here: {', '.join(sorted(known))})")
        elif name in _SCALARS:
            typ, ok, what = _SCALARS[name]
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)) or not ok(value):
                errors.append(f"{key} = {_show(value)}: use {what}")
            else:
                kw[name] = value
        elif name == "ops":
            ops = _parse_ops(key, value, errors)
            if ops:
                kw["ops"] = ops
        else:
            parse = parse_duration if name == "ttl" else parse_size
            d = parse_dist(key, value, parse, errors)
            if d is not None:
                kw[name] = d
    if "value_size" in kw and kw["value_size"].min < 0:
        errors.append("workload.value_size: sizes cannot be negative")
    if "key_size" in kw and kw["key_size"].min < 1:
        errors.append("workload.key_size: a key has at least 1 byte")
    if errors:
        raise ConfigError(*(f"{source}: {e}" for e in errors))
    return WorkloadSpec(**kw)


def _parse_ops(key: str, value: Any, errors: list[str]) -> tuple[float, float, float] | None:
    if not isinstance(value, Mapping):
        errors.append(f"{key} = {_show(value)}: use a table like {{get = 0.8, set = 0.2, delete = 0.0}}")
        return None
    bad = False
    for k, v in value.items():
        if k not in OPS:
            errors.append(f"{key}.{k}: unknown operation{_near(k, OPS)} (use get, set, delete)")
            bad = True
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            errors.append(f"{key}.{k} = {_show(v)}: use a share >= 0")
            bad = True
    if bad:
        return None
    w = [float(value.get(k, 0.0)) for k in OPS]
    if sum(w) <= 0:
        errors.append(f"{key}: at least one operation needs a share above 0")
        return None
    return tuple(x / sum(w) for x in w)  # type: ignore[return-value]


def loads(text: str, source: str = "<string>") -> WorkloadSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return from_dict(data, source)


def load(name_or_path: str | Path) -> WorkloadSpec:
    """A preset by name (``kvcache``, ``write-only``, ``twitter-like``) or a TOML file."""
    p = Path(name_or_path)
    preset = PRESETS_DIR / f"{name_or_path}.toml"
    if not p.suffix and preset.exists():
        return loads(preset.read_text(), f"preset {name_or_path}")
    try:
        return loads(p.read_text(), str(p))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such workload file or preset; presets: {', '.join(presets())}") from None


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
