"""nvme-cli's output for the FDP structures: ``nvme fdp configs|usage|stats|events|status``.

Owns formatting only (dicts and text from parsed structures; no parsing, no I/O). Checked
byte-for-byte against the real nvme-cli 2.3 binary (tests/nvme/golden). Surprise: nvme-cli
misreads the Media Reallocated LBA (at +8, a C padding slip); we print the spec's +4.
"""
# Versions. Debian 12's package "2.4+really2.3" is nvme-cli 2.3 (libnvme 1.3): it prints the
# u128 counters of the statistics log as quoted decimal strings. nvme-cli >= 2.4 (PR #1831,
# a json-c serializer; Debian 13 ships 2.13) prints them as bare numbers: flavor "2.4+".
# Everything else is the same in 2.3 and in nvme-cli's current nvme-print-json.c: the configs
# JSON has no RUH list (nvme-cli builds it and never attaches it) and no maxpids/dsze, and
# "n" is the 0's based N. One snapshot between those (the root_add_* helper era) used "Type"
# and "NSID" as event keys; which releases carried that was not verified.

from __future__ import annotations

import json
import time

FLAVORS = ("2.3", "2.4+")
DEFAULT_FLAVOR = "2.4+"


def _check(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"nvme-cli JSON flavor {flavor!r}: use one of {', '.join(FLAVORS)}")


def _u128(v: int, flavor: str):
    _check(flavor)
    return str(v) if flavor == "2.3" else v


def dumps(obj, _level: int = 0) -> str:
    """JSON text byte-for-byte as nvme-cli prints it (json-c PRETTY | NOSLASHESCAPE).

    2-space indent, no space after ':', and an empty array as "[" newline "]" (json-c's
    quirk), without the trailing newline nvme-cli adds.
    """
    ind = "  " * _level
    if isinstance(obj, dict):
        items = [f'{ind}  {json.dumps(str(k))}:{dumps(v, _level + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + ("\n" if items else "") + ind + "}"
    if isinstance(obj, (list, tuple)):
        items = [f"{ind}  {dumps(v, _level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + ("\n" if items else "") + ind + "]"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int):
        return str(obj)
    return json.dumps(obj, ensure_ascii=False)


def _c_hash_x(v: int) -> str:
    """C's printf("%#x"): 0 prints as "0", others as 0x..."""
    return f"{v:#x}" if v else "0"


# -- FDP Configurations (LID 0x20) ---------------------------------------------------------

def configs_json(log, flavor: str = DEFAULT_FLAVOR) -> dict:
    _check(flavor)
    return {"n": log.n, "configs": [
        {"fdpa": c.fdpa, "vss": c.vss, "nrg": c.nrg, "nruh": c.nruh, "nnss": c.nnss, "runs": c.runs,
         "erutl": c.erutl} for c in log.configs]}


def configs_text(log) -> str:
    out = []
    for c in log.configs:
        out += [f"FDP Attributes: {_c_hash_x(c.fdpa)}",
                f"Vendor Specific Size: {c.vss}",
                f"Number of Reclaim Groups: {c.nrg}",
                f"Number of Reclaim Unit Handles: {c.nruh}",
                f"Number of Namespaces Supported: {c.nnss}",
                f"Reclaim Unit Nominal Size: {c.runs}",
                f"Estimated Reclaim Unit Time Limit: {c.erutl}",
                "Reclaim Unit Handle List:"]
        out += [f"  [{j}]: {r.name}" for j, r in enumerate(c.ruhs)]
    return "\n".join(out)


# -- RUH Usage (LID 0x21) -------------------------------------------------------------------

def usage_json(log, flavor: str = DEFAULT_FLAVOR) -> dict:
    _check(flavor)
    return {"nruh": log.nruh, "ruhus": [{"ruha": d.ruha} for d in log.ruhus]}


def usage_text(log) -> str:
    return "\n".join(f"Reclaim Unit Handle {i} Attributes: 0x{d.ruha:x} ({d.name})"
                     for i, d in enumerate(log.ruhus))


# -- FDP Statistics (LID 0x22) ---------------------------------------------------------------

def stats_json(log, flavor: str = DEFAULT_FLAVOR) -> dict:
    return {"hbmw": _u128(log.hbmw, flavor), "mbmw": _u128(log.mbmw, flavor), "mbe": _u128(log.mbe, flavor)}


def stats_text(log) -> str:
    return "\n".join([f"Host Bytes with Metadata Written (HBMW): {log.hbmw}",
                      f"Media Bytes with Metadata Written (MBMW): {log.mbmw}",
                      f"Media Bytes Erased (MBE): {log.mbe}"])


# -- FDP Events (LID 0x23) -------------------------------------------------------------------

_MEDIA_REALLOCATED = 0x80


def events_json(log, flavor: str = DEFAULT_FLAVOR) -> dict:
    _check(flavor)
    evs = []
    for e in log.events:
        d = {"type": e.type, "fdpef": e.flags, "pid": e.pid, "timestamp": e.timestamp, "nsid": e.nsid}
        if e.type == _MEDIA_REALLOCATED:
            d["nlbam"] = e.nlbam
            if e.lbav:
                d["lba"] = e.lba
        evs.append(d)
    return {"n": log.nevents, "events": evs}


def _ctime_utc(ms: int) -> str:
    # nvme-cli formats with localtime() and "%c %Z"; we always say UTC so output does not
    # depend on the machine's TZ (identical to nvme-cli when TZ=UTC).
    t = time.gmtime(ms // 1000)
    return f"{time.strftime('%a %b', t)} {t.tm_mday:2d} {time.strftime('%H:%M:%S %Y', t)} UTC"


def events_text(log) -> str:
    out = []
    for i, e in enumerate(log.events):
        out += [f"Event[{i}]",
                f"  Event Type: 0x{e.type:x} ({e.type_name})",
                f"  Event Timestamp: {e.timestamp_ms} ({_ctime_utc(e.timestamp_ms)})"]
        if e.piv:
            out.append(f"  Placement Identifier (PID): 0x{e.pid:x}")
        if e.nsidv:
            out.append(f"  Namespace Identifier (NSID): {e.nsid}")
        if e.type == _MEDIA_REALLOCATED:
            out.append(f"  Number of LBAs Moved (NLBAM): {e.nlbam}")
            if e.lbav:
                out.append(f"  Logical Block Address (LBA): 0x{e.lba:x}")
        if e.lv:
            out.append(f"  Reclaim Group Identifier: {e.rgid}")
            out.append(f"  Reclaim Unit Handle Identifier {e.ruhid}")  # sic: nvme-cli prints no colon
        out.append("")
    return "\n".join(out)


# -- RUH Status (I/O Management Receive MO 1) --------------------------------------------------

def status_json(st, flavor: str = DEFAULT_FLAVOR) -> dict:
    _check(flavor)
    return {"nruhsd": st.nruhsd, "ruhss": [
        {"pid": d.pid, "ruhid": d.ruhid, "earutr": d.earutr, "ruamw": d.ruamw} for d in st.descriptors]}


def status_text(st) -> str:
    out = []
    for d in st.descriptors:
        out += [f"Placement Identifier {d.pid}; Reclaim Unit Handle Identifier {d.ruhid}",
                f"  Estimated Active Reclaim Unit Time Remaining (EARUTR): {d.earutr}",
                f"  Reclaim Unit Available Media Writes (RUAMW): {d.ruamw}",
                ""]
    return "\n".join(out)
