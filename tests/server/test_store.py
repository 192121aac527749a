"""store.py: the item format round-trips, memcached's exptime rules, per-key locks stay bounded."""
import asyncio

from hypothesis import given, strategies as st

from flashcache.server.store import (EXPIRED, HEADER, MAX_RELATIVE, STATE_KEY, KeyLocks, pack_item, to_expiry,
                                     unpack_item)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255),
       st.binary(max_size=2000))
def test_item_format_round_trips(flags, cas, expiry, bits, data):
    it = unpack_item(pack_item(flags, cas, expiry, bits, data))
    assert (it.flags, it.cas, it.expiry, it.bits, bytes(it.data)) == (flags, cas, expiry, bits, data)


def test_values_that_are_not_server_items_read_as_none():
    assert unpack_item(b"short") is None
    assert unpack_item(b"\x02" + b"\x00" * HEADER.size) is None      # another format version


def test_exptime_relative_absolute_negative():
    now = 1_800_000_000.5
    assert to_expiry(0, now) == 0
    assert to_expiry(-1, now) == EXPIRED
    assert to_expiry(10, now) == 1_800_000_010
    assert to_expiry(MAX_RELATIVE, now) == 1_800_000_000 + MAX_RELATIVE
    assert to_expiry(MAX_RELATIVE + 1, now) == EXPIRED                # a Unix time long past
    assert to_expiry(1_900_000_000, now) == 1_900_000_000


def test_state_key_is_beyond_any_memcached_key():
    assert len(STATE_KEY) > 250


def test_key_locks_serialize_and_disappear_when_idle():
    async def main():
        locks = KeyLocks()
        order = []

        async def rmw(tag):
            await locks.acquire(b"k")
            try:
                order.append(f"{tag} in")
                await asyncio.sleep(0.01)
                order.append(f"{tag} out")
            finally:
                locks.release(b"k")
        await asyncio.gather(*(rmw(i) for i in range(3)))
        assert order == ["0 in", "0 out", "1 in", "1 out", "2 in", "2 out"]
        assert len(locks) == 0
    asyncio.run(main())
