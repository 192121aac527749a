"""protocol.Parser without sockets: framing, limits, and any bytes give requests or
clean error replies (never an exception)."""
from hypothesis import given, settings, strategies as st

from flashcache.server.protocol import BAD_CHUNK, TOO_LARGE, Parser, Reply, Request, key_ok, strtol32, strtoull


def drain(p: Parser) -> list:
    out = []
    while (r := p.next()) is not None:
        out.append(r)
        if isinstance(r, Reply) and r.close:
            break
    return out


def test_requests_split_across_feeds_come_out_whole():
    p = Parser()
    wire = b"set k 1 2 5\r\nhello\r\nget a b\r\n"
    got = []
    for i in range(len(wire)):
        p.feed(wire[i:i + 1])
        got += drain(p)
    assert [r.name for r in got] == [b"set", b"get"]
    assert got[0].data == b"hello" and (got[0].flags, got[0].exptime) == (1, 2)
    assert got[1].keys == [b"a", b"b"] and p.buffered == 0


def test_too_large_value_is_discarded_as_it_arrives():
    p = Parser(item_size_max=100)
    p.feed(b"set k 0 0 1000\r\n" + b"x" * 600)
    (r,) = drain(p)
    assert r.line == TOO_LARGE and not r.close and p.buffered == 0
    p.feed(b"x" * 402 + b"get k\r\n")
    assert [x.name for x in drain(p)] == [b"get"]


def test_a_huge_declared_length_closes():
    p = Parser(item_size_max=100, swallow_max=1000)
    p.feed(b"set k 0 0 2000000000\r\n")
    (r,) = drain(p)
    assert r.line == TOO_LARGE and r.close


def test_an_endless_line_closes_but_a_long_multiget_does_not():
    p = Parser(max_line=10_000)
    p.feed(b"x" * 3000)
    assert drain(p)[0].close
    p = Parser(max_line=10_000)
    p.feed(b"get " + b"k " * 2000)
    assert drain(p) == [] and p.buffered == 4004
    p.feed(b"k" * 7000)
    assert drain(p)[0].close


def test_bad_data_chunk():
    p = Parser()
    p.feed(b"set k 0 0 1\r\nabc\r\n")
    r1, r2 = drain(p)
    assert r1.line == BAD_CHUNK and r2.line == b"ERROR"


def test_numbers_read_like_memcached():
    assert strtol32(b"-1") == -1 and strtol32(b"2147483648") is None and strtol32(b"1x") is None
    assert strtoull(b"18446744073709551615") == 2**64 - 1 and strtoull(b"-1") is None
    assert key_ok(b"a" * 250) and not key_ok(b"a" * 251) and not key_ok(b"a\x00") and not key_ok(b"a\tb")


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 64))
def test_any_bytes_give_requests_or_error_replies(chunks, step):
    p = Parser(item_size_max=1000, max_line=4096, swallow_max=10_000)
    for c in chunks:
        for i in range(0, len(c), step):
            p.feed(c[i:i + step])
            for r in drain(p):
                assert isinstance(r, (Request, Reply))
                if isinstance(r, Reply) and r.close:
                    return
    assert p.buffered <= 4096 + 1000 + 2 + 300
