#!/usr/bin/env python3
"""flashcache serve against memcached, driven by the same load generator in the same run.

memaslap (Debian's libmemcached-tools ships it as memcaslap) drives both on loopback with
the same arguments and duration, alternating, round after round: 90 % get, 10 % set;
values 70 % 100 B, 25 % 1 KiB, 5 % 16 KiB; 16-byte keys; 32 connections over 2 threads.
Neither side writes anything durable per request (memcached keeps nothing; flashcache
writes DRAM's evictions to its emulated device, no fsync). flashcache's DRAM tier is a
small fraction of what memaslap stores, so flash holds most items; the share of hits it
served comes from the server's own stats. memaslap's keys carry control bytes, so
flashcache runs with server.strict_keys = false (memcached accepts them too). flashcache
runs on uvloop (its default; --loop asyncio for asyncio's own loop). --python-side adds a
third side each round, flashcache with server.accelerate = false, so the C text path's
gain is measured under the same load.

Before the rounds, each side gets one warm-up run of --warmup seconds with the same load,
not counted (both sides alike: memcached's slabs and flashcache's DRAM tier, device and
page cache start filled, as in the rounds that follow). Each side's figure is the median
of its rounds, and the ratio the median of the rounds' ratios (never the best round). The run fails if memaslap or memcached write anything to
stderr, or flashcache's log holds an error. Prints ops/s and p50/p99 latency per side
(memaslap's log2 histogram over all rounds: a percentile is reported as the upper edge of
its power-of-two bucket) and the ratio, then one JSON line
``{"bench": "server", "ratios": {"ops": ...}, ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = """key
16 16 1
value
100 100 0.7
1024 1024 0.25
16384 16384 0.05
cmd
0 0.1
1 0.9
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench_server: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench_server: {what} did not listen on {port} within {timeout} s")


def stats(port: int, sub: str = "") -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"stats {sub}\r\n".encode())
        buf = b""
        deadline = time.monotonic() + 10
        while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
            buf += s.recv(65536)
    out = {}
    for line in buf.decode().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def memaslap(exe: str, port: int, cfg: Path, seconds: int, conns: int, threads: int) -> dict:
    r = subprocess.run([exe, "-s", f"127.0.0.1:{port}", "-F", str(cfg), "-T", str(threads), "-c", str(conns),
                        "-t", f"{seconds}s", "-S", f"{seconds}s"], capture_output=True, text=True,
                       timeout=seconds + 120)
    if r.stderr.strip():
        sys.exit(f"bench_server: memaslap wrote to stderr (the run does not count):\n{r.stderr[-2000:]}")
    out = r.stdout
    m = re.search(r"Run time: ([\d.]+)s Ops: (\d+) TPS: (\d+)", out)
    if not m:
        sys.exit(f"bench_server: memaslap gave no result:\n{out[-2000:]}")
    hist: dict[int, int] = {}
    sec = out.split("Total Statistics (")[-1]
    dist = sec.split("Log2 Dist:")[-1] if "Log2 Dist:" in sec else ""
    for line in dist.splitlines():
        mm = re.match(r"\s*(\d+):\s+([\d\s]+)$", line)
        if not mm:
            if hist:
                break
            continue
        base = int(mm.group(1))
        for j, n in enumerate(mm.group(2).split()):
            hist[base + j] = hist.get(base + j, 0) + int(n)
    return {"ops": int(m.group(2)), "seconds": float(m.group(1)), "hist": hist,
            "misses": int(re.search(r"get_misses: (\d+)", out).group(1)) if "get_misses" in out else None}


def percentile_us(hist: dict, q: float) -> int | None:
    total = sum(hist.values())
    if not total:
        return None
    acc = 0
    for b in sorted(hist):
        acc += hist[b]
        if acc >= q * total:
            return 2 ** (b + 1)                  # the bucket's upper edge: latencies in [2^b, 2^(b+1)) us
    return None


def start_flashcache(tmp: Path, loop: str, dram: str, size: str, fast_path: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    tag = f"{loop}{'' if fast_path else '-python'}"
    cfg = tmp / f"fc-{tag}.toml"
    cfg.write_text(f"""
[device]
kind = "emulated"
path = "fc-{tag}.img"
size = "{size}"
[cache]
dram_size = "{dram}"
[cache.flash]
bighash_fraction = 0.5
[server]
port = {port}
metrics_port = 0
strict_keys = false
accelerate = {"true" if fast_path else "false"}
[log]
level = "warning"
""")
    env = dict(os.environ, FLASHCACHE_EVENT_LOOP=loop)
    proc = subprocess.Popen([sys.executable, "-m", "flashcache.cli", "serve", "-c", str(cfg)], cwd=ROOT, env=env,
                            stdout=open(tmp / f"fc-{tag}.log", "w"), stderr=subprocess.STDOUT)
    wait_port(port, proc, f"flashcache serve ({loop})")
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8, help="per side per round")
    ap.add_argument("--warmup", type=int, default=6, help="seconds of uncounted load per side before the rounds")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dram", default="4MiB", help="flashcache's DRAM tier (keep it under a quarter of the data set)")
    ap.add_argument("--device-size", default="1GiB")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="flashcache's event loop")
    ap.add_argument("--no-fast-path", action="store_true",
                    help="server.accelerate = false: every request through the Python path (to measure the C path)")
    ap.add_argument("--python-side", action="store_true",
                    help="also run a third side each round: flashcache with server.accelerate = false")
    args = ap.parse_args()
    exe = shutil.which("memcaslap") or shutil.which("memaslap")
    mc = shutil.which("memcached")
    if not exe or not mc:
        sys.exit("bench_server: needs memcached and memaslap: tools/bootstrap.sh memcached libmemcached-tools")
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            sys.exit("bench_server: uvloop is not installed (a default dependency: pip install -e .)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None))
    cfg = tmp / "workload.cfg"
    cfg.write_text(WORKLOAD)
    mport = free_port()
    margs = [mc, "-l", "127.0.0.1", "-p", str(mport), "-U", "0", "-t", "2", "-m", "2048"]
    if os.geteuid() == 0:
        margs += ["-u", "root"]
    merr = open(tmp / "memcached.err", "w")
    procs = [subprocess.Popen(margs, stdout=subprocess.DEVNULL, stderr=merr)]
    fc = "flashcache"
    try:
        wait_port(mport, procs[0], "memcached")
        p, port = start_flashcache(tmp, args.loop, args.dram, args.device_size, not args.no_fast_path)
        procs.append(p)
        sides = {"memcached": mport, fc: port}
        if args.python_side:
            p2, port2 = start_flashcache(tmp, args.loop, args.dram, args.device_size, False)
            procs.append(p2)
            sides["fc/python"] = port2
        settings = stats(port, "settings")
        print(f"flashcache: event_loop={settings.get('event_loop')} text_fast_path={settings.get('text_fast_path')}; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for name, port in sides.items():                    # warm-up, not counted
            if args.warmup:
                memaslap(exe, port, cfg, args.warmup, args.conns, args.threads)
        per_round: list[dict] = []
        hists: dict = {name: {} for name in sides}
        share = [0, 0]
        for rnd in range(args.rounds):
            row = {}
            for name, port in sides.items():
                before = stats(port) if name != "memcached" else None
                r = memaslap(exe, port, cfg, args.seconds, args.conns, args.threads)
                if name == fc:
                    after = stats(port)
                    share[0] += int(after["flash_hits"]) - int(before["flash_hits"])
                    share[1] += int(after["dram_hits"]) - int(before["dram_hits"])
                for b, n in r["hist"].items():
                    hists[name][b] = hists[name].get(b, 0) + n
                row[name] = r["ops"] / r["seconds"]
                print(f"round {rnd + 1} {name:12} {row[name]:9.0f} ops/s", flush=True)
            row["ratio"] = row[fc] / row["memcached"]
            if args.python_side:
                row["ratio_python"] = row["fc/python"] / row["memcached"]
            per_round.append(row)
        merr.flush()
        if (tmp / "memcached.err").read_text().strip():
            sys.exit(f"bench_server: memcached wrote to stderr:\n{(tmp / 'memcached.err').read_text()[-2000:]}")
        bad = [ln for log in tmp.glob("fc-*.log") for ln in log.read_text(errors="replace").splitlines()
               if " ERROR " in ln or "Traceback" in ln]
        if bad:
            sys.exit("bench_server: flashcache logged errors:\n" + "\n".join(bad[:20]))
        ratio = statistics.median(r["ratio"] for r in per_round)
        f, d = share
        sh = f"{f / (f + d):.0%} ({f} flash, {d} DRAM)" if f + d else "n/a"
        print(f"\n{'side':12} {'ops/s':>9} {'p50 us':>8} {'p99 us':>8}   (medians of {args.rounds} rounds of "
              f"{args.seconds} s; latency over all rounds)")
        out = {}
        for name in sides:
            ops = statistics.median(r[name] for r in per_round)
            p50, p99 = percentile_us(hists[name], 0.5), percentile_us(hists[name], 0.99)
            print(f"{name:12} {ops:9.0f} {'<=' + str(p50):>8} {'<=' + str(p99):>8}")
            out[name] = {"ops_per_s": round(ops), "p50_us_le": p50, "p99_us_le": p99}
        print(f"ratio (median of the rounds' ratios): {ratio:.3f}; rounds: "
              f"{', '.join(format(r['ratio'], '.3f') for r in per_round)}")
        if args.python_side:
            print("ratio with server.accelerate = false (median): "
                  f"{statistics.median(r['ratio_python'] for r in per_round):.3f}")
        print(f"flashcache: share of hits served by flash: {sh}")
        ratios = {"ops": round(ratio, 3)}
        if args.python_side:
            ratios["ops_python_path"] = round(statistics.median(r["ratio_python"] for r in per_round), 3)
        print(json.dumps({"bench": "server", "ratios": ratios, "rounds": args.rounds,
                          "seconds": args.seconds, "event_loop": settings.get("event_loop"),
                          "text_fast_path": settings.get("text_fast_path"), "results": out,
                          "per_round": [{k: round(v, 3 if k.startswith("ratio") else 0) for k, v in r.items()}
                                        for r in per_round],
                          "flash_share": f / (f + d) if f + d else None,
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]}))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        merr.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
