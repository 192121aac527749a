"""The `flashcache` command: serve, run/check, selfcheck, config.

Owns argument parsing and human output only; the work happens in the library. Exit codes:
0 ok, 1 a check failed, 2 bad usage or config (the message says what to fix).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from . import config as config_mod
from .errors import FlashCacheError

log = logging.getLogger("flashcache")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def selfcheck(cfg: config_mod.Config, out=None) -> int:
    """An honest I/O self-check of the configured device: open it (with format safety),
    report what it is, then write a pattern over a few blocks, read it back, compare, and
    restore what was there. Returns 0 when every check passed."""
    from .devices import open_device

    out = out or sys.stdout
    dcfg = cfg.device
    path_dir = os.path.dirname(dcfg.path)
    if path_dir and dcfg.kind in ("file", "emulated"):
        os.makedirs(path_dir, exist_ok=True)
    t0 = time.perf_counter()
    dev = open_device(dcfg)
    ok = True
    try:
        st = dev.stats()
        print(f"device     {dev.path}: {st.get('target', dev.kind)}, {dev.size / (1 << 20):.1f} MiB, "
              f"block {dev.block_size} B, engine {st.get('engine', dev.kind)}"
              f"{', O_DIRECT' if st.get('direct') else ''}", file=out)
        ring = getattr(dev, "ring_info", None)
        if ring:
            print("ring       " + ", ".join(f"{k} {v}" for k, v in ring().items()), file=out)
        stream = dev.open_stream("selfcheck")
        print(f"placement  {stream.placement}", file=out)
        reason = dev.waf_unavailable_reason()
        print(f"waf        {'available' if reason is None else 'unavailable: ' + reason}", file=out)
        bs = dev.block_size
        nblocks = min(64, dev.size // bs)
        spots = sorted({0, (dev.size // bs // 2), dev.size // bs - nblocks})
        reqs = [(b * bs, nblocks * bs) for b in spots]
        saved = dev.read_many(reqs)
        pattern = [bytes((i * 131 + j) & 0xFF for j in range(256)) * (nblocks * bs // 256) for i in range(len(reqs))]
        try:
            dev.write_many([(off, pat, stream) for (off, _), pat in zip(reqs, pattern)])
            back = dev.read_many(reqs)
            bad = [off for (off, _), a, b in zip(reqs, pattern, back) if a != b]
        finally:
            dev.write_many([(off, data, stream) for (off, _), data in zip(reqs, saved)])
            dev.flush()
        restored = dev.read_many(reqs) == saved
        n = sum(ln for _, ln in reqs)
        if bad:
            ok = False
            print(f"verify     FAILED at offsets {bad}", file=out)
        else:
            print(f"verify     wrote, read back and compared {n // 1024} KiB at {len(reqs)} places: ok", file=out)
        if not restored:
            ok = False
            print("restore    FAILED: the original contents did not read back", file=out)
        else:
            print("restore    original contents put back: ok", file=out)
        print(f"selfcheck  {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.2f} s", file=out)
    finally:
        dev.close()
    return 0 if ok else 1


def check_items(c, wanted: int) -> tuple[dict[bytes, bytes], str]:
    """The cache check's items: ``wanted`` of them (one in ten 20 kB, the rest 100 B), or
    as many as this cache holds with room to spare, so that none of them may be evicted
    and every one must read back: the large ones in at most half of BlockCache's usable
    regions, the small ones at most 4 to a BigHash bucket (a bucket holds ~30). Returns the
    items and a note when there are fewer than asked."""
    def make(n: int) -> dict[bytes, bytes]:
        return {f"selfcheck:{i}".encode(): bytes([i % 256]) * (100 if i % 10 else 20_000) for i in range(n)}

    fl = c.stats()["flash"]
    bc, bh = fl.get("blockcache"), fl.get("bighash")
    n = wanted
    while n:
        vals = make(n)
        bc_bytes = bh_items = 0
        for k, v in vals.items():
            eng = c.navy.engine_for(len(k), len(v))
            if eng == "blockcache":
                al = bc["alignment"]
                bc_bytes += -(-(len(k) + len(v) + 64) // al) * al
            elif eng == "bighash":
                bh_items += 1
        # regions the log can fill: those in use (the rest are lent to a moving split's
        # BigHash) but the ones kept clean and the open one
        usable = bc["limit"] - c.config.cache.flash.clean_regions - 1 if bc else 0
        bc_room = max(usable, 0) * bc["region_size"] // 2 if bc else 0
        if bc_bytes <= bc_room and bh_items <= (4 * bh["nbuckets"] if bh else 0):
            return vals, ("" if n == wanted else f" ({wanted} asked: this device holds {n} with room to spare)")
        n //= 2
    raise FlashCacheError("flashcache run: the cache is too small to hold even one item of the check without "
                          "evicting; give the device more space (device.size) or check the [cache.flash] layout")


def cache_check(cfg: config_mod.Config, out=None, items: int = 2000) -> int:
    """The cache on the configured device: set items of every size class, read every one
    back and compare it, delete them and see that none is served any more, and report
    tiers, placement and device WAF as stats() gives them.

    The check runs with a 1 MiB DRAM tier (most items go through flash) and admission
    accept-all (the policy's choices are not what it checks), and with no more items than
    the flash engines hold with room to spare (``check_items``): so a miss is a loss, and
    fails the check, as does a wrong value or a deleted item served."""
    import dataclasses

    from .cache import Cache

    out = out or sys.stdout
    t0 = time.perf_counter()
    cc = cfg.cache
    small = dataclasses.replace(cfg, cache=dataclasses.replace(
        cc, dram_size=1 << 20, admission=dataclasses.replace(cc.admission, policy="accept-all")))
    with Cache(small) as c:
        print(f"cache      {c.stats()['start']}; checked with a 1 MiB DRAM tier and admission accept-all"
              + (f" (configured: {cc.admission.policy})" if cc.admission.policy != "accept-all" else ""), file=out)
        vals, fewer = check_items(c, items)
        c.set_many(vals)
        got = c.get_many(list(vals))
        wrong = [k for k, v in got.items() if v != vals[k]]
        missing = [k for k in vals if k not in got]
        st = c.stats()
        for k in vals:
            c.delete(k)
        served = c.get_many(list(vals))
    so = st["since_open"]
    fl = st["flash"]
    dropped = so["flash"]["admission_rejects"] + so["flash"]["too_large"] + \
        sum(fl.get(e, {}).get("evictions", 0) for e in ("bighash", "blockcache"))
    print(f"items      set {len(vals)}{fewer}, read back {len(got)} (hits: DRAM {so['hits']['dram']}, flash "
          f"{so['hits']['flash']}), missing {len(missing)}, wrong {len(wrong)}; flash evictions and rejections "
          f"{dropped}; deleted {len(vals)}, still served {len(served)}", file=out)
    for what, keys in (("missing", missing), ("wrong", wrong), ("served after delete", list(served))):
        if keys:
            shown = ", ".join(k.decode() for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
            print(f"FAILED     {len(keys)} item(s) {what}: {shown}", file=out)
    for eng, p in st["placement"].items():
        print(f"placement  {eng}: " + (f"on, placement identifier {p['pid']}" if p["state"] == "on"
                                       else f"off: {p['reason']}"), file=out)
    for span, label in (("since_open", "since open"), ("lifetime", "lifetime  ")):
        w = st[span]["device_waf"]
        if w["value"] is not None:
            print(f"device WAF {w['value']:.3f} {label} (host {w['hbmw']:,} B, media {w['mbmw']:,} B)", file=out)
        else:
            print(f"device WAF {label}: {w['status']}", file=out)
    a = so["app_write_amplification"]
    print("app WA     " + (f"{a['value']:.2f} since open (engines wrote {sum(so['device_bytes_written'].values()):,} B "
                           f"for {so['item_bytes_set']:,} B of items set)" if a["value"] is not None
                           else f"since open: {a['status']}"), file=out)
    ok = not (wrong or missing or served)
    print(f"cachecheck {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.2f} s", file=out)
    return 0 if ok else 1


def serve(args: argparse.Namespace) -> int:
    """`flashcache serve`: the config's [server] table, with --listen/--port/--metrics-port
    on top (validated like the file: a non-loopback address needs server.allow_remote)."""
    import tomllib

    from . import server

    path = args.config
    try:
        data = tomllib.loads(open(path).read()) if path else {}
    except FileNotFoundError:
        raise config_mod.ConfigError(f"{path}: config file not found; the examples are in config/") from None
    except tomllib.TOMLDecodeError as e:
        raise config_mod.ConfigError(f"{path}: not valid TOML: {e}") from None
    over = {k: v for k, v in (("listen", args.listen), ("port", args.port), ("metrics_port", args.metrics_port))
            if v is not None}
    if over:
        data.setdefault("server", {}).update(over)
    cfg = config_mod.from_dict(data, path, base_dir=os.path.dirname(os.path.abspath(path)))
    _setup_logging(cfg.log.level)
    if cfg.device.kind in ("file", "emulated") and os.path.dirname(cfg.device.path):
        os.makedirs(os.path.dirname(cfg.device.path), exist_ok=True)

    def ready(srv) -> None:
        host, port = srv.address[:2]
        line = f"flashcache serve: memcached protocol on {host}:{port}"
        if srv.metrics_address:
            line += f", metrics on http://{srv.metrics_address[0]}:{srv.metrics_address[1]}/metrics"
        print(line + f" ({cfg.device.kind} device {cfg.device.path}); Ctrl-C stops", flush=True)

    server.serve(cfg, ready)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="flashcache", description="A flash cache with NVMe FDP placement.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_srv = sub.add_parser("serve", help="serve the cache over the memcached protocol (text and meta) until "
                                         "SIGTERM/SIGINT")
    p_srv.add_argument("-c", "--config", default="config/default.toml")
    p_srv.add_argument("--listen", help="address to listen on (default: server.listen, 127.0.0.1)")
    p_srv.add_argument("--port", type=int, help="TCP port (default: server.port, 11211)")
    p_srv.add_argument("--metrics-port", type=int, help="Prometheus /metrics port, 0 = off (default: 9150)")
    for name in ("run", "check"):
        p_run = sub.add_parser(name, help="check the device and the cache on a config: write, read back, report")
        p_run.add_argument("-c", "--config", default="config/default.toml")
    p_sc = sub.add_parser("selfcheck", help="check the configured device: open, write, read back, restore")
    p_sc.add_argument("-c", "--config", default="config/default.toml")
    p_cfg = sub.add_parser("config", help="validate a config file, or list every option")
    p_cfg.add_argument("-c", "--config", help="the file to validate (omit to list all options)")
    p_cfg.add_argument("-o", "--output", choices=("normal", "json"), default="normal")
    from . import cli_nvme, cli_waf
    cli_nvme.add_parser(sub)
    cli_waf.add_parser(sub)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "nvme":
            return cli_nvme.run(args)
        if args.cmd == "waf":
            return cli_waf.run(args)
        if args.cmd == "serve":
            return serve(args)
        if args.cmd in ("run", "check", "selfcheck"):
            cfg = config_mod.load(args.config)
            _setup_logging(cfg.log.level)
            rc = selfcheck(cfg)
            return rc or cache_check(cfg)
        if args.cmd == "config":
            if args.config:
                cfg = config_mod.load(args.config)
                print(f"{args.config}: ok")
                return 0
            rows = config_mod.describe()
            if args.output == "json":
                print(json.dumps([{"key": k, "default": d, "doc": doc} for k, d, doc in rows], indent=2))
            else:
                for k, d, doc in rows:
                    print(f"{k:24} {d:22} {doc}")
            return 0
    except config_mod.ConfigError as e:
        for problem in e.errors:             # every problem of the file, one per line
            print(f"flashcache: config error: {problem}", file=sys.stderr)
        return 2
    except FlashCacheError as e:
        print(f"flashcache: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
