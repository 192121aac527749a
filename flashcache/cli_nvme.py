"""`flashcache nvme ...`: nvme-cli's FDP plugin, plus `id` and `waf`, on flashcache's own code.

Owns argument handling and printing for the NVMe subcommands; every command goes through
flashcache.devices.nvme's functions, so what this prints is what the cache sees. JSON
keys and formats follow nvme-cli (`nvme fdp ... -o json`).
"""
from __future__ import annotations

import json
import sys
import time

from . import nvme
from .nvme import jsonfmt as _jsonfmt  # noqa: F401  (nvme.jsonfmt)
from .devices import nvme as nvdev
from .errors import DeviceError


def add_parser(sub) -> None:
    p = sub.add_parser("nvme", help="NVMe FDP tools (like nvme-cli's fdp plugin), id and waf")
    nsub = p.add_subparsers(dest="nvme_cmd", required=True)
    fdp = nsub.add_parser("fdp", help="FDP log pages and commands")
    fsub = fdp.add_subparsers(dest="fdp_cmd", required=True)
    for name, hlp in (("configs", "FDP configurations (log 0x20)"), ("usage", "RUH usage (log 0x21)"),
                      ("stats", "FDP statistics: HBMW, MBMW, MBE (log 0x22)"),
                      ("events", "FDP events (log 0x23)"), ("status", "RUH status (I/O Management Receive)"),
                      ("update", "RUH update (I/O Management Send)"), ("feature", "the FDP feature (0x1D)")):
        q = fsub.add_parser(name, help=hlp)
        q.add_argument("device", help="/dev/nvmeX, /dev/nvmeXnY or /dev/ngXnY")
        q.add_argument("-e", "--endgrp-id", type=int, default=None, help="endurance group (default: the namespace's, else 1)")
        q.add_argument("-o", "--output-format", choices=("normal", "json"), default="normal")
        q.add_argument("--json-flavor", choices=nvme.jsonfmt.FLAVORS, default=nvme.jsonfmt.DEFAULT_FLAVOR,
                       help='nvme-cli version to match: "2.3" (Debian 12) prints 128-bit counters as strings')
        if name == "events":
            q.add_argument("-E", "--host-events", action="store_true", help="host events (default: controller events)")
        if name == "update":
            q.add_argument("-p", "--pids", required=True, help="comma-separated placement identifiers")
    q = nsub.add_parser("id", help="a short summary: model, capacity, LBA size, FDP, handles")
    q.add_argument("device")
    q.add_argument("-o", "--output-format", choices=("normal", "json"), default="normal")
    q = nsub.add_parser("waf", help="print device WAF over successive intervals until interrupted")
    q.add_argument("device")
    q.add_argument("-i", "--interval", type=float, default=5.0, help="seconds per interval")
    q.add_argument("-n", "--count", type=int, default=0, help="stop after N intervals (0 = until Ctrl-C)")
    q.add_argument("-e", "--endgrp-id", type=int, default=None)


def _transport(path: str):
    from .devices.nvme_passthru import PassthroughTransport
    return PassthroughTransport(path, use_ring=False, need_namespace=False)


def _endgid(t, given: int | None) -> int:
    if given is not None:
        return given
    if t.nsid:
        ns = nvme.IdentifyNamespace.parse(nvdev.admin_buf(t, nvme.identify_namespace(t.nsid), 4096))
        if ns.endgid:
            return ns.endgid
    return 1


def run(args, out=None) -> int:
    out = out or sys.stdout
    if args.nvme_cmd == "id":
        from .devices.nvme_passthru import open_nvme_device
        dev = open_nvme_device(args.device, exclusive=False)    # reads only: a cache may be using it
        try:
            info = dev.info()
        finally:
            dev.close()
        if args.output_format == "json":
            print(json.dumps(info, indent=2), file=out)
        else:
            print(format_id(info), file=out)
        return 0
    t = _transport(args.device)
    try:
        if args.nvme_cmd == "waf":
            return _waf_loop(t, _endgid(t, args.endgrp_id), args.interval, args.count, out)
        return _fdp(t, args, out)
    finally:
        t.close()


def _need_ns(t, what: str) -> None:
    if not t.nsid:
        raise DeviceError(t.path, f"{what} needs a namespace", None, "give /dev/nvmeXnY or /dev/ngXnY")


def _fdp(t, args, out) -> int:
    c = args.fdp_cmd
    js = args.output_format == "json"
    if c in ("status", "update"):
        _need_ns(t, f"fdp {c}")
    if c == "update":
        pids = [int(x, 0) for x in args.pids.split(",") if x.strip()]
        nvdev.ruh_update(t, pids)
        print("update: Success", file=out)
        return 0
    if c == "status":
        obj = nvdev.read_ruh_status(t)
    else:
        eg = _endgid(t, args.endgrp_id)
        if c == "configs":
            obj = nvdev.read_configs(t, eg)
        elif c == "usage":
            obj = nvdev.read_usage(t, eg)
        elif c == "stats":
            obj = nvdev.read_stats(t, eg)
        elif c == "events":
            obj = nvdev.read_events(t, eg, host=args.host_events)
        else:  # feature
            f = nvdev.read_fdp_feature(t, eg)
            if js:
                print(json.dumps({"endgid": eg, "fdpe": int(f.fdpe), "fdpcidx": f.fdpcidx}, indent=2), file=out)
            else:
                print(f"Endurance Group {eg}: FDP {'enabled' if f.fdpe else 'disabled'} "
                      f"(FDPE {int(f.fdpe)}), configuration index {f.fdpcidx}", file=out)
            return 0
    if js:
        print(nvme.jsonfmt.dumps(obj.to_nvme_cli_json(args.json_flavor)), file=out)
    else:
        print(obj.to_text(), file=out)
    return 0


def _waf_loop(t, endgid: int, interval: float, count: int, out) -> int:
    prev = nvdev.read_stats(t, endgid)
    print(f"{'time':>8} {'host MiB':>10} {'media MiB':>10} {'WAF':>7}   (endurance group {endgid}, "
          f"every {interval:g} s)", file=out, flush=True)
    t0 = time.monotonic()
    n = 0
    try:
        while count == 0 or n < count:
            time.sleep(interval)
            cur = nvdev.read_stats(t, endgid)
            dh, dm = cur.hbmw - prev.hbmw, cur.mbmw - prev.mbmw
            waf = f"{dm / dh:7.3f}" if dh else "    n/a"
            print(f"{time.monotonic() - t0:8.1f} {dh / 2**20:10.2f} {dm / 2**20:10.2f} {waf}", file=out, flush=True)
            prev = cur
            n += 1
    except KeyboardInterrupt:
        pass
    return 0


def format_id(i: dict) -> str:
    cap = i["capacity_bytes"]
    lines = [
        f"{i['path']}: {i['model']} (serial {i['serial']}, firmware {i['firmware']})",
        f"  capacity     {cap / 2**30:.2f} GiB ({cap} bytes), namespace {i['nsid']}, LBA size {i['lba_size']} B, "
        f"max transfer {i['max_transfer_bytes'] // 1024} KiB",
        f"  FDP          {'supported' if i['fdp_supported'] else 'not supported'}"
        + ("" if not i["fdp_supported"] else
           f", {'enabled' if i['fdp_enabled'] else 'disabled' if i['fdp_enabled'] is False else 'state unknown'}"
           f", endurance group {i['endurance_group']}"),
    ]
    if i["fdp_supported"]:
        ru = i["reclaim_unit_bytes"]
        lines.append(f"  reclaim      {i['reclaim_groups'] or '?'} group(s), unit {ru / 2**20:.0f} MiB" if ru
                     else "  reclaim      configuration not readable")
        types = i["handle_types"]
        kinds = ", ".join(f"{types.count(x)} {x}" for x in dict.fromkeys(types)) if types else "types unknown"
        lines.append(f"  handles      {i['handles']} ({kinds}); placement identifiers {i['placement_identifiers']}")
    lines.append(f"  placement    {i['placement']}")
    lines.append(f"  WAF          {i['waf']}")
    for n in i["notes"]:
        lines.append(f"  note         {n}")
    return "\n".join(lines)
