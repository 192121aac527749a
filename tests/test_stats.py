"""Cache.stats() (flashcache/stats.py): every figure under the interval it covers, since-open
figures from zero at each open, lifetime ones accumulating across restarts, ratios from
deltas over their own interval, and a real count of the items on flash."""
from __future__ import annotations

import pytest

import flashcache
from engines.device import run
from flashcache import stats as stats_mod
from flashcache.devices import open_device
from tests.test_cache import cfg

BUCKET = 4096                                       # BigHash's default bucket_size
REGION = 1 << 20                                    # cfg()'s region_size
ENGINES = ("bighash", "blockcache")


def conf(tmp_path):
    """tests/test_cache.py's cache (64 MiB emulated FDP SSD, BigHash a quarter of it, 1 MiB
    regions) with a 64 KiB DRAM tier, so most items reach flash."""
    return cfg(tmp_path, dram="64KiB")


def ratios(st):
    """Every ratio figure of a stats() dict, by path."""
    so = st["since_open"]
    return {"since_open.app_write_amplification": so["app_write_amplification"],
            "since_open.device_waf": so["device_waf"], "window.device_waf": st["window"]["device_waf"],
            "lifetime.device_waf": st["lifetime"]["device_waf"]}


def assert_ratios_say_why(st):
    """A ratio has a value exactly when its status is "available"; otherwise the status
    says why (never "available" with None)."""
    for path, r in ratios(st).items():
        assert (r["value"] is not None) == (r["status"] == stats_mod.AVAILABLE), (path, r)
        assert r["status"], path


def readable_on_flash(c, keys):
    """How many of ``keys`` flash itself returns (not the DRAM tier)."""
    return sum(run(c.navy.lookup(k), c.device) is not None for k in keys)


def stream_bytes(dev):
    b = dev.stats()["bytes_written_by_stream"]
    return {e: b.get(e, 0) for e in ENGINES}


def test_since_open_restarts_from_zero_and_lifetime_accumulates_over_three_restarts(tmp_path):
    """Open, write, close, three times on one emulated FDP SSD (the device is ours, opened
    and closed with each cache, so its own counters say what each open wrote)."""
    config_ = conf(tmp_path)
    lifetime = dict.fromkeys(ENGINES, 0)           # the sum of what the engines wrote, by the device's count
    live: dict[bytes, bytes] = {}
    deleted: set[bytes] = set()
    waf_since_open = []
    for rnd in range(3):
        dev = open_device(config_.device)
        c = flashcache.Cache(config_, device=dev)
        try:
            snap0 = dev.waf_snapshot()
            st = c.stats()
            assert st["start"] == ("warm" if rnd else "formatted: new device")
            so = st["since_open"]
            # since open: zero at every open
            for k in ("gets", "sets", "deletes", "touches", "misses", "promotions", "demotions",
                      "demotions_skipped_clean", "item_bytes_set"):
                assert so[k] == 0, k
            assert so["hits"] == {"dram": 0, "flash": 0} and so["hit_ratio"] is None
            assert set(so["flash"].values()) == {0}
            assert so["device_bytes_written"] == {"bighash": 0, "blockcache": 0}
            assert so["app_write_amplification"] == {"value": None, "status": stats_mod.NO_SETS}
            assert so["device_waf"]["hbmw"] == 0 and so["device_waf"]["value"] is None
            # lifetime: what every earlier open wrote, closes included
            assert st["lifetime"]["device_bytes_written"] == lifetime
            assert_ratios_say_why(st)
            if rnd:
                assert st["items"]["flash"] == readable_on_flash(c, live) and st["items"]["flash_exact"]

            # 8000 sets: 6000 new keys (every 50th a 20 KB BlockCache item), then 2000 overwrites
            n_small = large_bytes = item_bytes = 0
            for i in range(8000):
                k = b"r%d-%d" % (rnd, i % 6000)
                v = bytes([i % 256]) * (200 if i % 50 else 20_000)
                c.set(k, v)
                live[k] = v
                item_bytes += len(k) + len(v)
                if len(v) < 1000:
                    n_small += 1
                else:
                    large_bytes += len(k) + len(v)
            gone = list(live)[::97]                    # and a few deletes, of keys of every open
            for k in gone:
                c.delete(k)
                del live[k]
                deleted.add(k)

            st = c.stats()
            snap1 = dev.waf_snapshot()
            so = st["since_open"]
            assert (so["sets"], so["deletes"], so["item_bytes_set"]) == (8000, len(gone), item_bytes)
            # the engines' bytes since open are what the device saw on their streams since open
            written = so["device_bytes_written"]
            assert written == stream_bytes(dev) and written["bighash"] > 0 and written["blockcache"] > 0
            assert st["lifetime"]["device_bytes_written"] == {e: lifetime[e] + written[e] for e in ENGINES}
            # app WA since open: since-open bytes over since-open bytes. Bound: a small set
            # costs at most two bucket writes (removing an older flash copy, then its
            # demotion), a large one its aligned entry (header and padding < 4 KiB), and an
            # open may rewrite the region the last close flushed (one region).
            wa = so["app_write_amplification"]
            assert wa["status"] == "available" and wa["value"] == sum(written.values()) / item_bytes
            bound = (2 * BUCKET * n_small + large_bytes + 4096 * (8000 - n_small) + REGION) / item_bytes
            assert 1.0 <= wa["value"] <= bound < 20, (wa, bound)
            # device WAF since open: the device's own counters, differenced over this open
            w = so["device_waf"]
            dh, dm, de = snap1.hbmw - snap0.hbmw, snap1.mbmw - snap0.mbmw, snap1.mbe - snap0.mbe
            assert (w["hbmw"], w["mbmw"], w["mbe"]) == (dh, dm, de) and w["value"] == dm / dh
            life = st["lifetime"]["device_waf"]
            assert (life["hbmw"], life["mbmw"]) == (snap1.hbmw, snap1.mbmw)
            assert life["value"] == snap1.mbmw / snap1.hbmw
            waf_since_open.append(w["value"])
            assert_ratios_say_why(st)
            # items on flash: what flash really returns (no TTLs here, so nothing expired)
            assert st["items"]["flash_exact"] is True
            assert st["items"]["flash"] == readable_on_flash(c, live)
            assert readable_on_flash(c, deleted) == 0
            assert st["items"]["dram"] == len(c.dram)
        finally:
            c.close()
        for e, n in stream_bytes(dev).items():     # this open's writes, the close's included
            lifetime[e] += n
        dev.close()
    # garbage collection set in on the later opens: since open then differs from lifetime
    assert waf_since_open[2] > 1.0


def test_device_waf_right_after_open_says_no_writes_yet(tmp_path):
    for _ in range(2):                             # formatted, then warm on a device with a history
        with flashcache.Cache(conf(tmp_path)) as c:
            st = c.stats()
            for span in ("since_open", "window"):
                w = st[span]["device_waf"]
                assert w["value"] is None and w["status"] == stats_mod.NO_WRITES[span], (span, w)
                assert w["hbmw"] == 0
            assert st["lifetime"]["device_waf"]["status"] == "available"   # the superblock, at least
            assert_ratios_say_why(st)
            c.set_many({b"k%d" % i: b"v" * 300 for i in range(2000)})


def test_waf_on_a_plain_file_is_unavailable_in_every_interval(tmp_path):
    with flashcache.Cache(cfg(tmp_path, kind="file")) as c:
        c.set_many({b"k%d" % i: b"v" * 300 for i in range(300)})
        st = c.stats()
        assert_ratios_say_why(st)
        for span in ("since_open", "window", "lifetime"):
            assert st[span]["device_waf"]["status"].startswith("unavailable: ")


def test_after_a_crash_bighash_estimates_its_items_and_says_so(tmp_path):
    config_ = conf(tmp_path)
    dev = open_device(config_.device)
    c = flashcache.Cache(config_, device=dev)
    keys = [b"c%d" % i for i in range(6000)]
    c.set_many({k: b"x" * 200 for k in keys})
    dev.close()                                     # no c.close(): no warm-restart metadata
    with flashcache.Cache(config_) as c2:
        st = c2.stats()
        assert st["start"].startswith("recovered after a crash: blockcache recovered from checkpoint")
        assert st["recovery"]["crash"] and st["recovery"]["bytes_read"] > 0
        truth = readable_on_flash(c2, keys)
        assert truth > 4000
        assert st["items"]["flash_exact"] is False
        assert abs(st["items"]["flash"] - truth) <= 0.25 * truth, (st["items"], truth)


def test_every_figure_is_described_and_every_description_is_a_figure(tmp_path):
    with flashcache.Cache(conf(tmp_path)) as c:
        st = c.stats()
    seen = set()

    def walk(d, prefix):
        for k, v in d.items():
            path = prefix + k
            assert path in stats_mod.FIGURES, f"{path} has no description in flashcache.stats.FIGURES"
            seen.add(path)
            if isinstance(v, dict) and any(p.startswith(path + ".") for p in stats_mod.FIGURES):
                walk(v, path + ".")

    walk(st, "")
    assert set(stats_mod.FIGURES) == seen
    assert stats_mod.describe("since_open.device_waf") == stats_mod.FIGURES["since_open.device_waf"]
    with pytest.raises(KeyError, match="no figure 'nope'"):
        stats_mod.describe("nope")
    doc = flashcache.Cache.stats.__doc__
    assert "since_open" in doc and "``lifetime.device_waf``" in doc
