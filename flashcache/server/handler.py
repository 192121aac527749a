"""What each memcached command does: a parsed ``Request`` in, the reply bytes out.

Owns command semantics (memcached 1.6's: store modes, CAS results, incr/decr arithmetic,
touch, flush_all, the meta commands' flags and return codes) and the stats replies. It
reaches the cache only through ``store.Store`` and opens no socket. The surprise: a
request is a coroutine that usually finishes without suspending (a DRAM hit, a set), so
the connection drives it eagerly and only a flash read or a contended key lock costs a
trip through the event loop.
"""
from __future__ import annotations

import base64
import os
import resource
import time
from typing import Any

from .protocol import UINT64_MAX, Request
from .store import EXPIRED, STALE, TOKEN_SENT, Store, to_expiry

VERSION = "1.6.18-flashcache-0.1.0"      # memcached's protocol level first: clients parse major.minor.patch
CRLF = b"\r\n"
END = b"END\r\n"

# store outcomes (memcached's store_item_type) and their text / meta replies
STORED, NOT_STORED, EXISTS, NOT_FOUND = 0, 1, 2, 3
TEXT = {STORED: b"STORED\r\n", NOT_STORED: b"NOT_STORED\r\n", EXISTS: b"EXISTS\r\n", NOT_FOUND: b"NOT_FOUND\r\n"}
META = {STORED: b"HD", NOT_STORED: b"NS", EXISTS: b"EX", NOT_FOUND: b"NF"}
MS_MODES = {"": "set", "S": "set", "E": "add", "A": "append", "P": "prepend", "R": "replace"}

COUNTERS = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush", "cmd_meta", "get_hits", "get_misses", "get_flushed",
            "delete_hits", "delete_misses", "incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_hits",
            "cas_misses", "cas_badval", "touch_hits", "touch_misses", "store_too_large")


class Handler:
    """Runs requests against a Store. ``counters`` holds memcached's command counters
    (``counts()`` adds those the C text path bumped: ``fast``, set by the server, or None);
    ``server`` (optional) supplies connection numbers and settings for ``stats``."""

    def __init__(self, store: Store, item_size_max: int, server: Any = None):
        self.store = store
        self.item_size_max = item_size_max
        self.server = server
        self.started = time.time()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.fast: Any = None                    # the server's TextPath (flashcache/_server.c), if on
        self.run = {b"get": self.get, b"gets": self.get, b"gat": self.get, b"gats": self.get,
                    b"set": self.storage, b"add": self.storage, b"replace": self.storage,
                    b"append": self.storage, b"prepend": self.storage, b"cas": self.storage,
                    b"delete": self.delete, b"incr": self.arith, b"decr": self.arith, b"touch": self.touch,
                    b"flush_all": self.flush_all, b"stats": self.stats, b"version": self.version,
                    b"verbosity": self.verbosity, b"mg": self.mg, b"ms": self.ms, b"md": self.md,
                    b"ma": self.ma, b"mn": self.mn, b"me": self.me}

    # -- get / gets / gat / gats --------------------------------------------------------------
    async def get(self, req: Request) -> Any:
        c = self.counters
        keys = req.keys
        with_cas = req.name in (b"gets", b"gats")
        if req.args is not None:                 # gat/gats: touch each item found
            items = [await self._touch(k, req.exptime) for k in keys]
            c["cmd_touch"] += len(keys)
        else:
            items = await self.store.get_many(keys)
            c["cmd_get"] += len(keys)
        out: list = []
        hits = 0
        for k, it in zip(keys, items):
            if it is None:
                continue
            hits += 1
            d = it.data
            if with_cas:
                out += (b"VALUE ", k, b" %d %d %d\r\n" % (it.flags, len(d), it.cas), d, CRLF)
            else:
                out += (b"VALUE ", k, b" %d %d\r\n" % (it.flags, len(d)), d, CRLF)
        if req.args is not None:
            c["touch_hits"] += hits
            c["touch_misses"] += len(keys) - hits
        else:
            c["get_hits"] += hits
            c["get_misses"] += len(keys) - hits
        out.append(END)
        return out

    async def _touch(self, key: bytes, exptime: int):
        st = self.store
        await st.locks.acquire(key)
        try:
            it = await st.get(key)
            if it is not None:
                await st.write(key, it.flags, to_expiry(exptime, st.clock()), it.data, it.bits, it.cas)
            return it
        finally:
            st.locks.release(key)

    # -- set / add / replace / append / prepend / cas -------------------------------------------
    async def storage(self, req: Request) -> Any:
        self.counters["cmd_set"] += 1
        try:
            res, _ = await self._store(req.name.decode(), req.key, req.flags, req.exptime, req.data, req.cas)
        except ValueError:
            self.counters["store_too_large"] += 1
            return b"SERVER_ERROR object too large for cache\r\n"
        if req.noreply:
            return None
        return TEXT[res]

    async def _store(self, mode: str, key: bytes, flags: int, exptime: int, data: Any, req_cas: int,
                     invalidate: bool = False) -> tuple[int, int]:
        """memcached's do_store_item: (outcome, CAS of the stored item or 0)."""
        st = self.store
        exp = to_expiry(exptime, st.clock())
        if mode == "set" and not req_cas:
            return STORED, await st.put(key, flags, exp, data)
        await st.locks.acquire(key)
        try:
            old = await st.get(key)
            c = self.counters
            if old is None:
                if mode == "cas":
                    c["cas_misses"] += 1
                    return NOT_FOUND, 0
                if mode in ("add", "set"):
                    return STORED, await st.write(key, flags, exp, data)
                return NOT_STORED, 0
            if not req_cas:
                match = None
            elif req_cas == old.cas:
                match = "match"
            elif invalidate and req_cas < old.cas:
                match = "stale"
            else:
                match = "bad"
            if mode == "add":
                return NOT_STORED, 0
            if mode == "cas":
                if match == "match":
                    c["cas_hits"] += 1
                    return STORED, await st.write(key, flags, exp, data)
                if match == "stale":
                    c["cas_hits"] += 1
                    return STORED, await st.write(key, flags, old.expiry, data, STALE | (old.bits & TOKEN_SENT))
                c["cas_badval"] += 1
                return EXISTS, 0
            if mode in ("append", "prepend"):
                if match not in (None, "match"):
                    return EXISTS, 0
                new = bytes(old.data) + bytes(data) if mode == "append" else bytes(data) + bytes(old.data)
                if len(new) > self.item_size_max:
                    return NOT_STORED, 0
                return STORED, await st.write(key, old.flags, old.expiry, new)
            return STORED, await st.write(key, flags, exp, data)     # set with a CAS of 0, replace
        finally:
            st.locks.release(key)

    # -- delete / incr / decr / touch ------------------------------------------------------------
    async def delete(self, req: Request) -> Any:
        held = await self.store.remove(req.key)
        self.counters["delete_hits" if held else "delete_misses"] += 1
        if req.noreply:
            return None
        return b"DELETED\r\n" if held else b"NOT_FOUND\r\n"

    async def arith(self, req: Request) -> Any:
        incr = req.name == b"incr"
        res, value, _ = await self._arith(req.key, incr, req.delta)
        name = "incr" if incr else "decr"
        self.counters[f"{name}_misses" if res == NOT_FOUND else f"{name}_hits"] += 1
        if res == NOT_FOUND:
            out = b"NOT_FOUND\r\n"
        elif value is None:
            return b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n" if not req.noreply else None
        else:
            out = value + CRLF
        return None if req.noreply else out

    async def _arith(self, key: bytes, incr: bool, delta: int, req_cas: int = 0, exptime: int | None = None,
                     vivify: int | None = None, initial: int = 0):
        """memcached's do_add_delta under the key's lock: (outcome, digits or None if the
        value is not a number, the item after). A shorter result keeps the value's length,
        padded with spaces, as memcached's in-place update does."""
        st = self.store
        await st.locks.acquire(key)
        try:
            it = await st.get(key)
            now = st.clock()
            if it is None:
                if vivify is None:
                    return NOT_FOUND, b"", None
                digits = b"%d" % initial
                exp = to_expiry(vivify, now)
                cas = await st.write(key, 0, exp, digits)
                return STORED, digits, (0, cas, exp if exp != EXPIRED else 0, 0, digits, True)
            if req_cas and req_cas != it.cas:
                return EXISTS, b"", None
            raw = bytes(it.data)
            num = _number(raw)
            if num is None:
                return NOT_STORED, None, None
            num = (num + delta) & UINT64_MAX if incr else max(num - delta, 0)
            digits = b"%d" % num
            value = digits + b" " * (len(raw) - len(digits)) if len(digits) < len(raw) else digits
            exp = it.expiry if exptime is None else to_expiry(exptime, now)
            cas = await st.write(key, it.flags, exp, value, it.bits)
            return STORED, digits, (it.flags, cas, exp if exp != EXPIRED else 0, it.bits, value, False)
        finally:
            st.locks.release(key)

    async def touch(self, req: Request) -> Any:
        self.counters["cmd_touch"] += 1
        it = await self._touch(req.key, req.exptime)
        self.counters["touch_hits" if it is not None else "touch_misses"] += 1
        if req.noreply:
            return None
        return b"TOUCHED\r\n" if it is not None else b"NOT_FOUND\r\n"

    # -- meta commands --------------------------------------------------------------------------
    async def mg(self, req: Request) -> Any:
        mf = req.meta
        st = self.store
        key = req.key
        c = self.counters
        c["cmd_get"] += 1
        writes = mf.ttl is not None or mf.vivify is not None or mf.recache is not None
        if writes:
            await st.locks.acquire(key)
        try:
            it = await st.get(key)
            now = st.clock()
            created = False
            if it is None and mf.vivify is not None:
                exp = to_expiry(mf.vivify, now)
                cas = await st.write(key, 0, exp, b"", TOKEN_SENT)
                created = True
                it_flags, it_cas, it_exp, it_bits, data = 0, cas, max(exp, 0), 0, b""
            elif it is None:
                c["get_misses"] += 1
                if mf.quiet:
                    return None
                return [b"EN", *self._opaque_key(mf, key), CRLF]
            else:
                it_flags, it_cas, it_exp, it_bits, data = it.flags, it.cas, it.expiry, it.bits, it.data
            c["get_hits"] += 1
            out: list = [b"VA %d" % len(data) if mf.value else b"HD"]
            won = False
            new_exp = None
            for ch in mf.order:
                if ch == "T":
                    new_exp = it_exp = to_expiry(mf.ttl, now)     # EXPIRED: the write below removes it
                elif ch == "N":
                    won = won or created
                elif ch == "R":
                    if not it_bits & TOKEN_SENT and not created and it_exp and it_exp < to_expiry(mf.recache, now):
                        won = True
                elif ch == "s":
                    out.append(b" s%d" % len(data))
                elif ch == "t":
                    out.append(b" t-1" if not it_exp else b" t%d" % max(it_exp - int(now), 0))
                elif ch == "c":
                    out.append(b" c%d" % it_cas)
                elif ch == "f":
                    out.append(b" f%d" % it_flags)
                elif ch == "O":
                    out += (b" ", mf.opaque)
                elif ch == "k":
                    out += _meta_key(key, mf)
            bits = it_bits
            if it_bits & TOKEN_SENT and not created:
                out.append(b" Z")
            if it_bits & STALE:
                out.append(b" X")
                if not it_bits & TOKEN_SENT:
                    won = True
            if won:
                out.append(b" W")
                bits |= TOKEN_SENT
            if not created and (new_exp is not None or bits != it_bits):
                if mf.ttl is not None:
                    c["cmd_touch"] += 1
                await st.write(key, it_flags, new_exp if new_exp is not None else it_exp, data, bits, it_cas)
            out.append(CRLF)
            if mf.value:
                out += (data, CRLF)
            return out
        finally:
            if writes:
                st.locks.release(key)

    async def ms(self, req: Request) -> Any:
        mf = req.meta
        self.counters["cmd_set"] += 1
        mode = MS_MODES[mf.mode]
        if mf.cas and mode in ("set", "replace"):
            mode = "cas"
        try:
            res, cas = await self._store(mode, req.key, mf.client_flags, mf.ttl or 0, req.data, mf.cas,
                                         mf.invalidate)
        except ValueError:
            self.counters["store_too_large"] += 1
            return b"SERVER_ERROR object too large for cache\r\n"
        if res == STORED and mf.quiet:
            return None
        out: list = [META[res]]
        for ch in mf.order:
            if ch == "O":
                out += (b" ", mf.opaque)
            elif ch == "k":
                out += _meta_key(req.key, mf)
            elif ch == "c":
                out.append(b" c%d" % cas)
        out.append(CRLF)
        return out

    async def md(self, req: Request) -> Any:
        mf = req.meta
        st = self.store
        key = req.key
        await st.locks.acquire(key)
        try:
            it = await st.get(key)
            if it is None:
                self.counters["delete_misses"] += 1
                res = b"NF"
            elif mf.cas and mf.cas != it.cas:
                self.counters["delete_misses"] += 1
                res = b"EX"
            elif mf.invalidate:
                exp = to_expiry(mf.ttl, st.clock()) if mf.ttl is not None else it.expiry
                await st.write(key, it.flags, exp, it.data, (it.bits | STALE) & ~TOKEN_SENT)
                res = b"HD"
            else:
                self.counters["delete_hits"] += 1
                await st.drop(key)
                res = b"HD"
        finally:
            st.locks.release(key)
        if res == b"HD" and mf.quiet:
            return None
        return [res, *self._opaque_key(mf, key), CRLF]

    async def ma(self, req: Request) -> Any:
        mf = req.meta
        incr = mf.mode in ("", "I", "+")
        res, digits, item = await self._arith(req.key, incr, mf.delta, mf.cas, mf.ttl, mf.vivify, mf.initial)
        name = "incr" if incr else "decr"
        if res == NOT_FOUND:
            self.counters[f"{name}_misses"] += 1
            return [b"NF", *self._opaque_key(mf, req.key), CRLF]
        if res == EXISTS:
            return [b"EX", *self._opaque_key(mf, req.key), CRLF]
        if digits is None:
            return b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        self.counters[f"{name}_hits"] += 1
        flags, cas, exp, bits, value, created = item
        if mf.quiet and not created:
            return None
        out: list = [b"VA %d" % len(digits) if mf.value else b"HD"]
        now = int(self.store.clock())
        for ch in mf.order:
            if ch == "c":
                out.append(b" c%d" % cas)
            elif ch == "t":
                out.append(b" t-1" if not exp else b" t%d" % max(exp - now, 0))
            elif ch == "O":
                out += (b" ", mf.opaque)
            elif ch == "k":
                out += _meta_key(req.key, mf)
        out.append(CRLF)
        if mf.value:
            out += (digits, CRLF)
        return out

    async def mn(self, req: Request) -> bytes:
        return b"MN\r\n"

    async def me(self, req: Request) -> bytes:
        it = await self.store.get(req.key)
        self.counters["cmd_meta"] += 1
        if it is None:
            return b"EN\r\n"
        now = int(self.store.clock())
        exp = -1 if not it.expiry else it.expiry - now
        return b"ME %s exp=%d la=0 cas=%d fetch=no cls=1 size=%d\r\n" % (req.key, exp, it.cas, len(it.data) + len(req.key))

    @staticmethod
    def _opaque_key(mf, key: bytes) -> list:
        out: list = []
        for ch in mf.order:
            if ch == "O":
                out += (b" ", mf.opaque)
            elif ch == "k":
                out += _meta_key(key, mf)
        return out

    # -- the rest --------------------------------------------------------------------------------
    async def flush_all(self, req: Request) -> Any:
        self.counters["cmd_flush"] += 1
        self.store.flush(req.exptime)
        await self.store.save()
        return None if req.noreply else b"OK\r\n"

    async def version(self, req: Request) -> bytes:
        return b"VERSION " + VERSION.encode() + CRLF

    async def verbosity(self, req: Request) -> Any:
        return None if req.noreply else b"OK\r\n"

    async def stats(self, req: Request) -> bytes:
        sub = req.args[0] if req.args else b""
        if sub == b"reset":
            self.counters = dict.fromkeys(COUNTERS, 0)
            if self.fast is not None:
                self.fast.reset_counters()
            if self.server is not None:
                self.server.reset_counters()
            return b"RESET\r\n"
        if sub == b"":
            rows = self._general()
        elif sub == b"settings":
            rows = self._settings()
        elif sub == b"items":
            rows = self._items()
        elif sub == b"slabs":
            rows = self._slabs()
        elif sub == b"flash":
            rows = self._flash()
        else:
            return b"ERROR\r\n"
        return b"".join(b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in rows) + END

    def counts(self) -> dict:
        """Every command counter: this handler's plus the C text path's."""
        c = dict(self.counters)
        if self.fast is not None:
            for k, v in self.fast.counters().items():
                c[k] += v
        return c

    def _cache_counts(self) -> dict:
        st = self.store.stats()
        items = st["items"]
        return {"st": st, "curr_items": (items["dram"] or 0) + (items["flash"] or 0),
                "bytes": st["bytes"]["dram"] or 0}

    def _general(self) -> list:
        now = time.time()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        srv = self.server
        cc = self._cache_counts()
        st = cc["st"]
        rows: list = [("pid", os.getpid()), ("uptime", int(now - self.started)), ("time", int(now)),
                      ("version", VERSION), ("pointer_size", 64),
                      ("rusage_user", f"{ru.ru_utime:.6f}"), ("rusage_system", f"{ru.ru_stime:.6f}")]
        if srv is not None:
            rows += [("max_connections", srv.settings.max_connections), ("curr_connections", srv.current),
                     ("total_connections", srv.counters["connections"]),
                     ("rejected_connections", srv.counters["rejected"])]
        counts = self.counts()
        rows += [(k, v) for k, v in counts.items()]
        if srv is not None:
            rows += [("bytes_read", srv.traffic.bytes_in), ("bytes_written", srv.traffic.bytes_out),
                     ("protocol_errors", srv.counters["protocol_errors"])]
            if srv.sender is not None:           # the writer thread (server.send_thread)
                rows += [(f"send_thread_{k}", v) for k, v in srv.sender.stats().items()]
        rows += [("limit_maxbytes", st["dram"]["capacity_bytes"]), ("threads", 1),
                 ("bytes", cc["bytes"]), ("curr_items", cc["curr_items"]),
                 ("total_items", counts["cmd_set"]), ("evictions", st["dram"]["evictions"]),
                 ("flash_hits", st["since_open"]["hits"]["flash"]), ("dram_hits", st["since_open"]["hits"]["dram"])]
        return rows

    def _settings(self) -> list:
        srv = self.server
        rows: list = [("item_size_max", self.item_size_max), ("cas_enabled", "yes"), ("evictions", "on"),
                      ("flush_enabled", "yes"), ("maxbytes", self.store.stats()["dram"]["capacity_bytes"])]
        if srv is not None:
            s = srv.settings
            rows += [("interface", s.listen), ("tcpport", s.port), ("maxconns", s.max_connections),
                     ("idle_timeout", int(s.idle_timeout)), ("read_buf_mem_limit", s.read_buffer),
                     ("metrics_port", s.metrics_port), ("event_loop", srv.loop_name),
                     ("text_fast_path", srv.fast_state.replace(" ", "_")),
                     ("flash_reads", "inline" if self.store.cache.inline is not None else "ring"),
                     ("send_thread", srv.send_state.replace(" ", "_"))]
        return rows

    def _items(self) -> list:
        cc = self._cache_counts()
        st = cc["st"]
        return [("items:1:number", cc["curr_items"]), ("items:1:number_dram", st["items"]["dram"]),
                ("items:1:number_flash", st["items"]["flash"] if st["items"]["flash"] is not None else "unknown"),
                ("items:1:evicted", st["dram"]["evictions"]), ("items:1:expired_unfetched", st["dram"]["expired"])]

    def _slabs(self) -> list:
        st = self.store.stats()
        return [("1:chunk_size", self.item_size_max), ("1:used_bytes", st["dram"]["bytes"]),
                ("active_slabs", 1), ("total_malloced", st["dram"]["bytes"])]

    def _flash(self) -> list:
        st = self.store.stats()
        so = st["since_open"]
        rows: list = [("start", st["start"]), ("hits_dram", so["hits"]["dram"]), ("hits_flash", so["hits"]["flash"]),
                      ("misses", so["misses"]), ("promotions", so["promotions"]), ("demotions", so["demotions"])]
        for eng, p in st["placement"].items():
            rows.append((f"placement:{eng}", f"on:pid={p['pid']}" if p["state"] == "on" else
                         "off:" + p["reason"].replace(" ", "_")))
        for eng, n in so["device_bytes_written"].items():
            rows.append((f"engine:{eng}:device_bytes_written_since_open", n))
        for eng, n in st["lifetime"]["device_bytes_written"].items():
            rows.append((f"engine:{eng}:device_bytes_written_lifetime", n))
        for eng in st["flash"].get("engines", ()):       # every engine the router has, in its order
            e = st["flash"].get(eng)
            if e:
                for k, v in e.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        rows.append((f"engine:{eng}:{k}", v))
        for name, fig in (("device_waf_since_open", so["device_waf"]), ("device_waf_window", st["window"]["device_waf"]),
                          ("device_waf_lifetime", st["lifetime"]["device_waf"]),
                          ("app_write_amplification_since_open", so["app_write_amplification"])):
            rows.append((name, "n/a" if fig["value"] is None else f"{fig['value']:.4f}"))
            rows.append((f"{name}_status", fig["status"].replace(" ", "_")))
        rows.append(("async_io", st.get("async_io", {}).get("mode", "n/a").replace(" ", "_")))
        return rows


def _number(raw: bytes) -> int | None:
    """memcached's safe_strtoull over an item's data: optional leading whitespace, digits,
    then whitespace or the end; at most 2**64 - 1; None if it is not such a number."""
    if not raw:
        return None
    s = raw.lstrip(b" \t\n\r\x0b\x0c")
    end = 0
    while end < len(s) and 48 <= s[end] <= 57:
        end += 1
    if end == 0 or (end < len(s) and s[end] not in b" \t\n\r\x0b\x0c"):
        return None
    v = int(s[:end])
    return v if v <= UINT64_MAX else None


def _meta_key(key: bytes, mf) -> list:
    if mf.base64:
        return [b" k", base64.b64encode(key), b" b"]
    return [b" k", key]
