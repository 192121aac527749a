"""The memcached text and meta protocol as data: bytes in, requests out (no I/O).

Owns request syntax only: line framing, tokenizing, the data block of storage commands,
meta flags, and every syntax error reply, with memcached 1.6's exact strings (its
proto_text.c is the reference: `CLIENT_ERROR bad command line format`, a too-large
value answered `SERVER_ERROR object too large for cache` and its data read and thrown
away, a bad data block `CLIENT_ERROR bad data chunk`, an unknown command `ERROR`). It
touches no cache; ``handler.py`` executes requests. The surprise, kept from memcached for
byte-for-byte compatibility: a storage line with a bad argument does *not* swallow its
data block, so the data line is then read as a command (and answered ``ERROR``).
"""
from __future__ import annotations

import base64
import binascii
import re

KEY_MAX = 250                 # memcached's KEY_MAX_LENGTH
MAX_TOKENS = 24               # memcached tokenizes at most 23 tokens (+ the terminal one)
META_MAX_TOKENS = 20          # MFLAG_MAX_OPT_LENGTH
OPAQUE_MAX = 32               # MFLAG_MAX_OPAQUE_LENGTH
LONG_LINE = 2048              # a line longer than this must be a multi-key get, or the client is cut off
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

BAD_FORMAT = b"CLIENT_ERROR bad command line format"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk"
TOO_LARGE = b"SERVER_ERROR object too large for cache"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument"
BAD_TOKEN = b"CLIENT_ERROR bad token in command line format"
ERROR = b"ERROR"

STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")
META_FLAGS = frozenset(b"bNTROPLkstcfvuqFCMJDI")   # mg/ms/md/ma flags memcached 1.6 accepts (minus l, h)


class Request:
    """One parsed request. ``name`` is the command (b"get", b"ms", ...); the other fields
    are set as the command has them. ``noreply``: send nothing for nominal results."""

    __slots__ = ("name", "key", "keys", "flags", "exptime", "cas", "noreply", "data", "delta", "meta", "args")

    def __init__(self, name: bytes, key: bytes = b"", keys: list | None = None, flags: int = 0,
                 exptime: int = 0, cas: int = 0, noreply: bool = False, delta: int = 0,
                 meta: "MetaFlags | None" = None, args: list | None = None):
        self.name = name
        self.key = key
        self.keys = keys
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.noreply = noreply
        self.data = b""
        self.delta = delta
        self.meta = meta
        self.args = args

    def __repr__(self) -> str:
        return f"Request({self.name!r}, key={self.key!r})"


class Reply:
    """A reply decided by the parser itself (a syntax error): send ``line`` (unless
    ``noreply``, or it is empty), then close the connection if ``close``."""

    __slots__ = ("line", "close", "noreply", "reason")

    def __init__(self, line: bytes, close: bool = False, noreply: bool = False, reason: str = ""):
        self.line = line
        self.close = close
        self.noreply = noreply
        self.reason = reason or line.decode("latin-1")

    def __repr__(self) -> str:
        return f"Reply({self.line!r}, close={self.close})"


class MetaFlags:
    """The flags of a meta command: ``order`` (flag characters as given, for the reply),
    ``opaque``, ``ttl`` (T), ``vivify`` (N), ``recache`` (R), ``client_flags`` (F),
    ``cas`` (C), ``mode`` (M), ``delta`` (D), ``initial`` (J), and booleans ``value`` (v),
    ``quiet`` (q), ``invalidate`` (I), ``base64`` (b)."""

    __slots__ = ("order", "opaque", "ttl", "vivify", "recache", "client_flags", "cas", "mode",
                 "delta", "initial", "value", "quiet", "invalidate", "base64")

    def __init__(self) -> None:
        self.order = ""
        self.opaque = b""
        self.ttl = self.vivify = self.recache = None
        self.client_flags = 0
        self.cas = 0
        self.mode = ""
        self.delta = 1
        self.initial = 0
        self.value = self.quiet = self.invalidate = self.base64 = False


# -- numbers the way memcached's safe_strto* read them ---------------------------------------
def _unsigned(tok: bytes, limit: int) -> int | None:
    if not tok.isdigit():
        if tok[:1] == b"+" and tok[1:].isdigit():
            tok = tok[1:]
        else:
            return None
    v = int(tok)
    return v if v <= limit else None


def strtoul32(tok: bytes) -> int | None:
    """memcached's safe_strtoul: decimal, no sign, < 2**32 (memcached itself would truncate more)."""
    return _unsigned(tok, UINT32_MAX)


def strtoull(tok: bytes) -> int | None:
    """memcached's safe_strtoull: decimal, no minus sign, < 2**64."""
    return _unsigned(tok, UINT64_MAX)


def strtol32(tok: bytes) -> int | None:
    """memcached's safe_strtol: a signed 32-bit decimal."""
    body = tok[1:] if tok[:1] in (b"-", b"+") else tok
    if not body.isdigit():
        return None
    v = int(tok)
    return v if -INT32_MAX - 1 <= v <= INT32_MAX else None


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]").search


def key_ok(key: bytes) -> bool:
    """≤ 250 bytes, no control characters (spaces cannot reach here: they split tokens)."""
    return len(key) <= KEY_MAX and _CONTROL(key) is None


def key_len_ok(key: bytes) -> bool:
    """memcached 1.6's own check: ≤ 250 bytes, any bytes but space, newline and NUL."""
    return len(key) <= KEY_MAX


# -- the parser ----------------------------------------------------------------------------------
class Parser:
    """Feed bytes with ``feed``; ``next()`` returns a ``Request``, a ``Reply`` (a syntax
    error to send) or None (needs more bytes). ``buffered`` is the bytes held.

    Limits: a line without ``\\n`` longer than 2048 bytes is allowed only for get/gets (a
    long multi-key get), up to ``max_line``; past either limit ``next()`` returns a
    closing Reply. A storage command's declared length above ``item_size_max`` is
    answered ``SERVER_ERROR object too large for cache`` and its data discarded as it
    arrives (never buffered), up to ``swallow_max`` bytes; a larger one closes the
    connection after the error. ``strict_keys``: refuse keys with control characters
    (protocol.txt's rule); False accepts them as memcached itself does."""

    def __init__(self, item_size_max: int = 1 << 20, max_line: int = 64 << 10, swallow_max: int = 64 << 20,
                 strict_keys: bool = True):
        self.item_size_max = item_size_max
        self.key_ok = key_ok if strict_keys else key_len_ok
        self.max_line = max_line
        self.swallow_max = swallow_max
        self._buf = b""
        self._pos = 0
        self._pending: Request | None = None   # a storage request waiting for its data block
        self._need = 0                           # its length + 2
        self._meta_data = False                 # the pending request is ms (bad chunk is always answered)
        self._swallow = 0
        self._commands = self._build_commands()

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def idle(self) -> bool:
        """Nothing buffered, no data block awaited or being discarded."""
        return self._pos >= len(self._buf) and self._pending is None and not self._swallow

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf = bytes(data)
        else:
            self._buf = self._buf[self._pos:] + data
        self._pos = 0

    def run_fast(self, serve) -> "bytes | None":
        """Let ``serve(buf, pos)`` (the server's TextPath.serve, flashcache/_server.c) answer
        the whole requests at the read position that it can; it returns where it stopped
        and their replies (None: none), and this parser goes on from there. Not while a
        data block is awaited or discarded: that is this parser's state."""
        if self._pending is not None or self._swallow or self._pos >= len(self._buf):
            return None
        self._pos, out = serve(self._buf, self._pos)
        return out

    def next(self) -> "Request | Reply | None":
        buf = self._buf
        pos = self._pos
        if self._swallow:
            n = min(self._swallow, len(buf) - pos)
            self._swallow -= n
            pos += n
            self._pos = pos
            if self._swallow:
                self._buf = b""
                self._pos = 0
                return None
        if self._pending is not None:
            need = self._need
            if len(buf) - pos < need:
                return None
            req = self._pending
            self._pending = None
            self._pos = pos + need
            if buf[pos + need - 2:pos + need] != b"\r\n":
                return Reply(BAD_CHUNK, noreply=req.noreply and not self._meta_data)
            req.data = buf[pos:pos + need - 2]
            return req
        nl = buf.find(b"\n", pos)
        if nl < 0:
            n = len(buf) - pos
            if n > LONG_LINE:
                seg = buf[pos:pos + 200]
                head = seg.lstrip(b" ")
                if len(seg) - len(head) > 100 or not (head.startswith(b"get ") or head.startswith(b"gets ")):
                    return Reply(b"", close=True, reason=f"a {n}-byte line without a newline (not a get)")
                if n > self.max_line:
                    return Reply(b"", close=True, reason=f"a get line over {self.max_line} bytes")
            return None
        line = buf[pos:nl]
        self._pos = nl + 1
        if len(line) > 1 and line[-1] == 13:
            line = line[:-1]
        if len(line) > self.max_line:
            return Reply(b"", close=True, reason=f"a {len(line)}-byte line")
        return self._line(line)

    def _build_commands(self) -> dict:
        d: dict = {}
        for c in (b"get", b"gets", b"gat", b"gats", b"bget"):
            d[c] = self._get
        for c in STORAGE:
            d[c] = self._storage
        for c in (b"mg", b"ms", b"md", b"ma", b"mn", b"me"):
            d[c] = self._meta_cmd
        for c in (b"incr", b"decr", b"touch"):
            d[c] = self._key_number
        d.update({b"delete": self._delete, b"flush_all": self._flush_all,
                  b"verbosity": self._verbosity, b"stats": self._simple, b"version": self._simple,
                  b"quit": self._simple})
        return d

    # -- one command line ----------------------------------------------------------------------
    def _line(self, line: bytes) -> "Request | Reply":
        if b"\0" in line:
            line = line[:line.index(b"\0")]       # memcached reads the line as a C string
        toks = line.split(b" ")                  # memcached splits on spaces only
        if b"" in toks:
            toks = [t for t in toks if t]
        if not toks or len(toks[0]) < 2:
            return Reply(ERROR)
        f = self._commands.get(toks[0])
        if f is not None:
            return f(toks[0], toks, min(len(toks), MAX_TOKENS - 1) + 1)   # memcached's ntokens
        if toks[-1].startswith(b"HTTP/"):
            return Reply(b"", close=True, reason="an HTTP request")
        return Reply(ERROR)

    def _get(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        if nt < 3:
            return Reply(ERROR)
        exptime = None
        keys = toks[1:]
        if cmd[:3] == b"gat":
            exptime = strtol32(toks[1])
            if exptime is None:
                return Reply(BAD_EXPTIME)
            keys = toks[2:]
        ok = self.key_ok
        for k in keys:
            if not ok(k):
                return Reply(BAD_FORMAT)
        return Request(b"get" if cmd == b"bget" else cmd, keys=keys, exptime=exptime or 0,
                       args=None if exptime is None else [])

    def _meta_cmd(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        c = cmd[1]
        if c == 0x73:
            return self._mset(toks, nt)
        if c == 0x6E:
            return Request(b"mn")
        if c == 0x65:
            if nt < 3 or len(toks[1]) > KEY_MAX:
                return Reply(BAD_FORMAT)
            return Request(b"me", key=toks[1])
        return self._meta(cmd, toks, nt)

    def _delete(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        if not 3 <= nt <= 5:
            return Reply(ERROR)
        noreply = False
        if nt > 3:
            hold_zero = toks[2] == b"0"
            noreply = toks[-1] == b"noreply"
            if not ((nt == 4 and (hold_zero or noreply)) or (nt == 5 and hold_zero and noreply)):
                return Reply(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]", noreply=noreply)
        if not self.key_ok(toks[1]):
            return Reply(BAD_FORMAT, noreply=noreply)
        return Request(b"delete", key=toks[1], noreply=noreply)

    def _key_number(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        """incr/decr <key> <delta> and touch <key> <exptime>, each with an optional noreply."""
        if nt not in (4, 5):
            return Reply(ERROR)
        noreply = toks[nt - 2] == b"noreply"
        if not self.key_ok(toks[1]):
            return Reply(BAD_FORMAT, noreply=noreply)
        touch = cmd == b"touch"
        n = strtol32(toks[2]) if touch else strtoull(toks[2])
        if n is None:
            return Reply(BAD_EXPTIME if touch else BAD_DELTA, noreply=noreply)
        if touch:
            return Request(cmd, key=toks[1], exptime=n, noreply=noreply)
        return Request(cmd, key=toks[1], delta=n, noreply=noreply)

    def _flush_all(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        if not 2 <= nt <= 4:
            return Reply(ERROR)
        noreply = toks[nt - 2] == b"noreply"
        delay = 0
        if nt != (3 if noreply else 2):
            delay = strtol32(toks[1])
            if delay is None:
                return Reply(BAD_EXPTIME, noreply=noreply)
        return Request(b"flush_all", exptime=delay, noreply=noreply)

    def _verbosity(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        if nt not in (3, 4):
            return Reply(ERROR)
        noreply = toks[nt - 2] == b"noreply"
        if strtoul32(toks[1]) is None:
            return Reply(BAD_FORMAT, noreply=noreply)
        return Request(b"verbosity", noreply=noreply)

    def _simple(self, cmd: bytes, toks: list, nt: int) -> Request:
        return Request(cmd, args=toks[1:])

    def _storage(self, cmd: bytes, toks: list, nt: int) -> "Request | Reply":
        if nt not in ((7, 8) if cmd == b"cas" else (6, 7)):
            return Reply(ERROR)
        noreply = toks[nt - 2] == b"noreply"
        key = toks[1]
        if not self.key_ok(key):
            return Reply(BAD_FORMAT, noreply=noreply)
        flags = strtoul32(toks[2])
        exptime = strtol32(toks[3])
        vlen = strtol32(toks[4])
        if flags is None or exptime is None or vlen is None:
            return Reply(BAD_FORMAT, noreply=noreply)
        cas = 0
        if cmd == b"cas":
            cas = strtoull(toks[5])
            if cas is None:
                return Reply(BAD_FORMAT, noreply=noreply)
        if vlen < 0 or vlen > INT32_MAX - 2:
            return Reply(BAD_FORMAT, noreply=noreply)
        if vlen > self.item_size_max:
            return self._too_large(vlen, noreply)
        req = Request(cmd, key=key, flags=flags, exptime=exptime, cas=cas, noreply=noreply)
        self._expect(req, vlen, meta=False)
        return self.next()

    def _too_large(self, vlen: int, noreply: bool, line: bytes = TOO_LARGE) -> Reply:
        if vlen + 2 > self.swallow_max:
            return Reply(line, close=True, reason=f"declared a {vlen}-byte value (over the {self.swallow_max}-byte "
                                                  "limit for discarding)")
        self._swallow = vlen + 2
        return Reply(line, noreply=noreply)

    def _expect(self, req: Request, vlen: int, meta: bool) -> None:
        self._pending = req
        self._need = vlen + 2
        self._meta_data = meta

    # -- meta commands -------------------------------------------------------------------------
    def _meta(self, name: bytes, toks: list, nt: int) -> "Request | Reply":
        if nt < 3:
            return Reply(ERROR)
        if len(toks[1]) > KEY_MAX:
            return Reply(BAD_FORMAT)
        if nt > META_MAX_TOKENS:
            return Reply(b"CLIENT_ERROR options flags are too long" if name == b"mg"
                         else b"CLIENT_ERROR options flags too long")
        mf, err = meta_flags(toks, 2)
        if err is not None:
            return Reply(err if name == b"mg" else b"CLIENT_ERROR invalid or duplicate flag")
        key, err = _meta_key(toks[1], mf, self.key_ok)
        if err is not None:
            return Reply(b"CLIENT_ERROR invalid or duplicate flag" if mf.base64 and name != b"mg" else err)
        if mf.mode and name == b"ma" and mf.mode not in "I+D-":
            return Reply(b"CLIENT_ERROR invalid mode for ma M token")
        if len(mf.opaque) > OPAQUE_MAX:
            return Reply(b"CLIENT_ERROR opaque token too long")
        return Request(name, key=key, meta=mf, noreply=mf.quiet)

    def _mset(self, toks: list, nt: int) -> "Request | Reply":
        if nt < 3:
            return Reply(ERROR)
        if len(toks[1]) > KEY_MAX or nt == 3:
            return Reply(BAD_FORMAT)
        if nt > META_MAX_TOKENS:
            return Reply(b"CLIENT_ERROR options flags too long")
        vlen = strtol32(toks[2])
        if vlen is None or vlen < 0 or vlen > INT32_MAX - 2:
            return Reply(BAD_FORMAT)
        mf, err = meta_flags(toks, 3)
        if err is None:
            key, err = _meta_key(toks[1], mf, self.key_ok)
        if err is None and len(mf.opaque) > OPAQUE_MAX:
            err = b"CLIENT_ERROR opaque token too long"
        if err is None and mf.mode and mf.mode not in "EAPRS":
            err = b"CLIENT_ERROR invalid mode for ms M token"
        if err is None and vlen > self.item_size_max:
            err = TOO_LARGE
        if err is not None:
            return self._too_large(vlen, False, err)
        req = Request(b"ms", key=key, meta=mf, noreply=mf.quiet, flags=mf.client_flags)
        self._expect(req, vlen, meta=True)
        return self.next()




# flag -> (MetaFlags field, how memcached reads its number, the error when it cannot)
_META_NUMBERS = {"N": ("vivify", strtol32, BAD_TOKEN), "T": ("ttl", strtol32, BAD_TOKEN),
                 "R": ("recache", strtol32, BAD_TOKEN), "F": ("client_flags", strtoul32, BAD_FORMAT),
                 "C": ("cas", strtoull, BAD_TOKEN),
                 "J": ("initial", strtoull, b"CLIENT_ERROR invalid numeric initial value"),
                 "D": ("delta", strtoull, b"CLIENT_ERROR invalid numeric delta value")}
_META_SWITCHES = {"v": "value", "q": "quiet", "I": "invalidate", "b": "base64"}


def meta_flags(toks: list, start: int) -> "tuple[MetaFlags, bytes | None]":
    """memcached's _meta_flag_preparse: every flag once, numbers checked (the first
    numeric error is the one reported, after every flag was seen)."""
    mf = MetaFlags()
    seen = set()
    order = []
    err = None
    for tok in toks[start:]:
        o = tok[0]
        if o >= 127 or o in seen:
            return mf, b"CLIENT_ERROR duplicate flag"
        seen.add(o)
        if o not in META_FLAGS:
            return mf, b"CLIENT_ERROR invalid flag"
        ch = chr(o)
        order.append(ch)
        if ch in _META_NUMBERS:
            name, read, bad = _META_NUMBERS[ch]
            v = read(tok[1:])
            if v is None:
                err = err or bad
            else:
                setattr(mf, name, v)
        elif ch in _META_SWITCHES:
            setattr(mf, _META_SWITCHES[ch], True)
        elif ch == "O":
            mf.opaque = tok
        elif ch == "M":
            if len(tok) != 2:
                err = err or b"CLIENT_ERROR incorrect length for M token"
            else:
                mf.mode = chr(tok[1])
    mf.order = "".join(order)
    return mf, err


def _meta_key(tok: bytes, mf: MetaFlags, ok=key_ok) -> "tuple[bytes, bytes | None]":
    """The key of a meta command: base64-decoded with the b flag; checked like any key."""
    key = tok
    if mf.base64:
        try:
            key = base64.b64decode(tok, validate=True)
        except (binascii.Error, ValueError):
            return tok, b"CLIENT_ERROR error decoding key"
        if not key or len(key) > KEY_MAX:
            return tok, b"CLIENT_ERROR error decoding key"
        return key, None
    if not ok(key):
        return key, BAD_FORMAT
    return key, None
