"""The emulated SSD's FTL against the analytical WAF of docs/waf-model.md, and its invariants."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flashcache.emulator import Ftl, FtlError, Geometry, model, preset
from flashcache.devices.emulated import load_ftl, save_ftl
from flashcache.emulator.validate import grid, idle_rus, uniform_random_waf
from flashcache.errors import FormatError

PAGE = 4096


def conventional(pages: int, op: float, ru_pages: int, policy: str = "greedy") -> Geometry:
    return Geometry(capacity_bytes=pages * PAGE, op=op, ru_bytes=ru_pages * PAGE, fdp=False,
                    gc_policy=policy)


def random_window_waf(ftl: Ftl, span: int, warm: int, window: int, seed: int) -> float:
    return uniform_random_waf(ftl, span, warm=warm, window=window, seed=seed)


def expected(g: Geometry, span: int, formula) -> float:
    # the formula under test, at alpha corrected for the spare that holds no data
    return formula(model.effective_alpha(g.physical_pages, span, g.ru_pages, idle_rus(g)))


def test_sequential_overwrite_gives_waf_exactly_one():
    g = conventional(1 << 14, 0.07, 64)
    ftl = Ftl(g, debug=True)
    for _ in range(5):
        ftl.write(0, g.exported_pages)
    h, m, e = ftl.counters()
    assert h == 5 * g.exported_pages * PAGE
    assert m == h                      # not one GC copy
    assert e > 0                       # and yet RUs were reclaimed


@pytest.mark.parametrize("op", [0.07, 0.12, 0.28, 0.50])
@pytest.mark.parametrize("ru_pages", [64, 256])
def test_greedy_uniform_random_matches_desnoyers(op, ru_pages):
    pages = 1 << 18
    g = conventional(pages, op, ru_pages)
    waf = random_window_waf(Ftl(g), pages, warm=8, window=4, seed=7)
    want = expected(g, pages, lambda a: model.waf_greedy(a, ru_pages))
    assert waf == pytest.approx(want, rel=0.02), (waf, want)


@pytest.mark.parametrize("op", [0.10, 0.28])
def test_fifo_matches_its_formula(op):
    pages = 1 << 18
    g = conventional(pages, op, 256, policy="fifo")
    waf = random_window_waf(Ftl(g), pages, warm=8, window=4, seed=3)
    want = expected(g, pages, model.waf_fifo)
    assert waf == pytest.approx(want, rel=0.02), (waf, want)
    # and FIFO is worse than greedy on the same device, as the formulas say
    assert waf > expected(g, pages, lambda a: model.waf_greedy(a, 256))


@pytest.mark.parametrize("trimmed", [0.10, 0.25])
def test_trim_lowers_waf_as_effective_op_predicts(trimmed):
    pages = 1 << 18
    g = conventional(pages, 0.07, 64)
    ftl = Ftl(g)
    ftl.write(0, pages)
    live = int(pages * (1 - trimmed))
    ftl.trim(live, pages - live)                  # the tail is deallocated for good
    assert ftl.mapped_pages == live
    waf = random_window_waf(ftl, live, warm=8, window=4, seed=11)
    want = expected(g, live, lambda a: model.waf_greedy(a, 64))
    assert waf == pytest.approx(want, rel=0.02), (waf, want)
    assert waf < expected(g, pages, lambda a: model.waf_greedy(a, 64)) * 0.8


def test_cost_benefit_runs_and_keeps_invariants():
    g = conventional(1 << 13, 0.12, 32, policy="cost-benefit")
    ftl = Ftl(g, debug=True)
    waf = random_window_waf(ftl, 1 << 13, warm=3, window=2, seed=5)
    ftl.check()
    assert 1.0 < waf < model.waf_fifo(g.physical_pages / g.exported_pages) * 1.1


def test_counters_add_up_per_handle():
    g = Geometry(capacity_bytes=(1 << 13) * PAGE, op=0.2, ru_bytes=32 * PAGE, handles=("II", "II", "PI"))
    ftl = Ftl(g, debug=True)
    rng = np.random.default_rng(1)
    for i in range(30):
        ftl.write_pages(rng.integers(0, 1 << 13, 1000, dtype=np.uint32), ruh=i % 3)
    h, m, e = ftl.counters()
    hc = ftl.handle_counters()
    assert sum(x["hbmw"] for x in hc) == h == 30_000 * PAGE
    assert sum(x["mbmw"] for x in hc) == m > h         # MBMW = HBMW + GC copies
    assert all(x["hbmw"] == 10_000 * PAGE for x in hc)
    assert e % g.ru_bytes == 0 and e > 0
    ftl.check()


def ru_handles(ftl: Ftl) -> list[set[int]]:
    """For each RU, the handles whose live data it holds."""
    g = ftl.geometry
    p2l = ftl.arrays["p2l"].reshape(g.nru, g.ru_pages)
    pr = ftl.arrays["p_ruh"].reshape(g.nru, g.ru_pages)
    return [set(pr[r][p2l[r] != 0xFFFFFFFF].tolist()) for r in range(g.nru)]


@pytest.mark.parametrize("kind,mixes", [("PI", False), ("II", True)])
def test_pi_gc_keeps_each_handles_data_apart_ii_mixes_it(kind, mixes):
    g = Geometry(capacity_bytes=(1 << 13) * PAGE, op=0.25, ru_bytes=32 * PAGE, handles=(kind, kind))
    ftl = Ftl(g, debug=True)
    rng = np.random.default_rng(2)
    half = 1 << 12
    for _ in range(40):      # each handle overwrites its own half of the space at random
        ftl.write_pages(rng.integers(0, half, 500, dtype=np.uint32), ruh=0)
        ftl.write_pages(rng.integers(half, 2 * half, 500, dtype=np.uint32), ruh=1)
    assert ftl.counters()[1] > ftl.counters()[0]       # GC did run
    mixed = any(len(s) > 1 for s in ru_handles(ftl))
    assert mixed is mixes


def test_fdp_separates_a_log_from_random_rewrites():
    """The paper's point in miniature: a sequential log (BlockCache-like) and random
    rewrites of a small range (BigHash-like) on one drive. Through separate handles the
    log's RUs die whole and only the small range is ever copied (Allison et al. 2025,
    Theorem 1); through one handle the log's live pages get copied too."""
    pages, soc = 1 << 15, 1 << 12

    def run(fdp: bool) -> float:
        g = Geometry(capacity_bytes=pages * PAGE, op=0.07, ru_bytes=64 * PAGE, handles=("II", "II"), fdp=fdp)
        ftl = Ftl(g)
        rng = np.random.default_rng(9)
        log_pos, log_span = 0, pages - soc
        ftl.write(0, pages, ruh=0)
        h0 = m0 = 0
        for step in range(400):
            if step == 200:
                h0, m0, _ = ftl.counters()
            loc = (log_pos + np.arange(256, dtype=np.uint32)) % log_span
            log_pos = (log_pos + 256) % log_span
            socw = rng.integers(log_span, pages, 256, dtype=np.uint32)
            if fdp:
                ftl.write_pages(loc, ruh=0)
                ftl.write_pages(socw, ruh=1)
            else:       # one stream: the two kinds of write interleave page by page
                ftl.write_pages(np.column_stack([loc, socw]).ravel(), ruh=0)
        h1, m1, _ = ftl.counters()
        return (m1 - m0) / (h1 - h0)

    with_fdp, without = run(True), run(False)
    assert without > 3 * with_fdp
    # The SOC gets all the spare: alpha = (SOC + spare) / SOC, and half the host writes
    # are SOC. Idle: the reserve and half of each of three open frontiers (two host, one GC).
    g = Geometry(capacity_bytes=pages * PAGE, op=0.07, ru_bytes=64 * PAGE, handles=("II", "II"))
    spare = g.physical_pages - pages - (g.gc_reserve_rus + 1.5) * g.ru_pages
    want = model.waf_segregated(0.5, (soc + spare) / soc, ru_pages=64)
    assert with_fdp == pytest.approx(want, rel=0.02), (with_fdp, want)


def test_greedy_takes_the_oldest_of_equally_empty_units():
    """Among closed RUs with the same (fewest) valid pages, GC takes the one closed first,
    not the one that reached that count last. Four RUs of 4 pages are filled in order
    (RUs 0-3), then emptied in the order 0, 1, 2: all three sit at 0 valid pages, RU 2
    got there last. The first GC must take RU 0, the next RU 1."""
    g = conventional(16, 1.25, 4)                 # 9 RUs: 4 of data, 5 spare
    assert (g.nru, g.gc_reserve_rus) == (9, 2)
    ftl = Ftl(g, debug=True)
    ftl.write(0, 16)                              # RUs 0..3 closed in that order
    state = ftl.arrays["ru_state"]
    ftl.write(0, 4)                               # RU 0 -> 0 valid (first); into RU 4
    ftl.write(4, 4)                               # RU 1 -> 0 valid; into RU 5
    ftl.write(8, 4)                               # RU 2 -> 0 valid (last); into RU 6
    assert ftl.counters()[2] == 0 and ftl.free_rus() == 2      # no GC yet
    ftl.write(12, 1)                              # needs a fresh RU: GC runs once
    assert ftl.counters()[2] == g.ru_bytes
    closed, open_host = 3, 1
    assert state[:3].tolist() == [open_host, closed, closed]   # RU 0 erased and reused
    ftl.write(13, 3)
    ftl.write(0, 1)                               # the next victim: RU 1
    assert state[:3].tolist() == [closed, open_host, closed]
    ftl.check()


class ReferenceGreedy:
    """An independent greedy FTL for one stream: lists and a linear scan instead of the
    emulator's buckets. GC runs when a host frontier is needed and no more than
    ``reserve`` RUs are free; the victim has the fewest valid pages, the oldest closed
    among equals; its live pages go, in the order they were programmed, to a separate GC
    frontier."""

    def __init__(self, g: Geometry):
        self.np, self.reserve = g.ru_pages, g.gc_reserve_rus
        self.where: dict[int, tuple[int, int]] = {}          # lpn -> (ru, slot)
        self.slots: list[list[int]] = [[] for _ in range(g.nru)]   # lpn per programmed page
        self.valid = [0] * g.nru
        self.closed_at: dict[int, int] = {}
        self.free = list(range(g.nru))
        self.host = self.gc = None
        self.clock = self.host_pages = self.gc_pages = 0

    def _place(self, lpn: int, ru: int) -> None:
        old = self.where.get(lpn)
        if old is not None:
            self.valid[old[0]] -= 1
        self.where[lpn] = (ru, len(self.slots[ru]))
        self.slots[ru].append(lpn)
        self.valid[ru] += 1

    def _collect(self) -> None:
        victim = min(self.closed_at, key=lambda r: (self.valid[r], self.closed_at[r]))
        del self.closed_at[victim]
        for slot, lpn in enumerate(self.slots[victim]):
            if self.where.get(lpn) != (victim, slot):
                continue
            if self.gc is None:
                self.gc = self.free.pop()
            self._place(lpn, self.gc)
            self.gc_pages += 1
            if len(self.slots[self.gc]) == self.np:
                self.closed_at[self.gc] = self.clock
                self.gc = None
        self.slots[victim] = []
        self.valid[victim] = 0
        self.free.append(victim)

    def write(self, lpn: int) -> None:
        if self.host is None:
            while len(self.free) <= self.reserve:
                self._collect()
            self.host = self.free.pop()
        self._place(lpn, self.host)
        self.host_pages += 1
        self.clock += 1
        if len(self.slots[self.host]) == self.np:
            self.closed_at[self.host] = self.clock
            self.host = None


def cache_like_stream(pages: int, soc: int, burst: int, device_writes: int, seed: int) -> np.ndarray:
    """A log over ``pages - soc`` pages (BlockCache-like) and uniform random rewrites of
    the last ``soc`` pages (BigHash-like), interleaved ``burst`` pages at a time."""
    rng = np.random.default_rng(seed)
    span, out, pos = pages - soc, [], 0
    while len(out) < device_writes * pages:
        out += [(pos + i) % span for i in range(burst)]
        pos = (pos + burst) % span
        out += rng.integers(span, pages, burst).tolist()
    return np.array(out, dtype=np.uint32)


@pytest.mark.parametrize("op,burst", [(0.12, 1), (0.12, 16), (0.07, 1)])
def test_greedy_copies_exactly_what_an_independent_simulator_copies(op, burst):
    """The same page stream through the emulator and through ReferenceGreedy gives the same
    GC copies, page for page. A CacheLib-like stream on a conventional SSD has many RUs
    with equal valid counts, so any other tie rule (the emulator once took the RU that
    most recently reached the count: 1-3 % more copies here) parts the two at once."""
    pages = 1 << 13
    g = conventional(pages, op, 64)
    stream = cache_like_stream(pages, pages // 8, burst, device_writes=6, seed=5)
    ftl, ref = Ftl(g), ReferenceGreedy(g)
    ftl.write_pages(stream)
    for lpn in stream.tolist():
        ref.write(lpn)
    h, m, e = ftl.counters()
    assert (h // PAGE, m // PAGE - h // PAGE) == (ref.host_pages, ref.gc_pages)
    assert ref.gc_pages > ref.host_pages          # GC copies a lot: the test has teeth


def test_ruh_update_closes_the_open_unit():
    g = Geometry(capacity_bytes=(1 << 12) * PAGE, op=0.2, ru_bytes=64 * PAGE, handles=("II", "II"))
    ftl = Ftl(g, debug=True)
    assert ftl.ru_remaining(1) == 64
    assert ftl.ruh_update(1) == 0                      # nothing written: nothing to close
    ftl.write(0, 10, ruh=1)
    assert ftl.ru_remaining(1) == 54
    assert ftl.ruh_update(1) == 54
    assert ftl.ru_remaining(1) == 64
    ftl.write(10, 1, ruh=1)
    assert ftl.ru_remaining(1) == 63
    ftl.check()


def test_relocations_are_logged_for_events():
    g = conventional(1 << 12, 0.2, 16)
    ftl = Ftl(g, relocation_log=1 << 16)
    random_window_waf(ftl, 1 << 12, warm=2, window=1, seed=4)
    runs = ftl.take_relocations()
    h, m, _ = ftl.counters()
    assert sum(n for _, n in runs) == (m - h) // PAGE
    assert ftl.take_relocations() == []


def test_errors_name_the_problem():
    g = conventional(1 << 12, 0.2, 16)
    ftl = Ftl(g)
    with pytest.raises(FtlError, match="beyond the 4096 exported pages"):
        ftl.write(4090, 10)
    with pytest.raises(FtlError, match="beyond"):
        ftl.write_pages(np.array([1, 4096], dtype=np.uint32))
    assert ftl.counters()[0] == 0                      # a bad batch writes nothing
    with pytest.raises(FtlError, match="handle 3 or reclaim group 0 out of range"):
        ftl.write(0, 1, ruh=3)
    with pytest.raises(FtlError, match="beyond"):
        ftl.trim(4000, 200)


@pytest.mark.parametrize("kw,msg", [
    (dict(op=0.0), "over-provisioning"),
    (dict(ru_bytes=1000), "multiple of 4096"),
    (dict(lba_size=1024), "use 512 or 4096"),
    (dict(handles=("XX",)), "handle type"),
    (dict(gc_policy="lru"), "greedy, fifo, cost-benefit"),
    (dict(op=0.01, ru_bytes=1 << 20), "spare reclaim units"),
])
def test_geometry_errors(kw, msg):
    base = dict(capacity_bytes=64 << 20, op=0.12, ru_bytes=1 << 20)
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        Geometry(**base)


def test_presets_are_valid_and_report_their_shape():
    for name in ("paper-1.88tb-scaled", "qemu-like", "small-test"):
        g = preset(name)
        assert g.op_actual >= g.op
        assert name and g.describe()
    p = preset("paper-1.88tb-scaled")
    assert p.handles == ("II",) * 8 and p.nrg == 1 and 300 <= p.nru <= 400
    with pytest.raises(ValueError, match="use one of"):
        preset("nope")


def test_state_persists_across_save_and_load(tmp_path):
    g = Geometry(capacity_bytes=(1 << 12) * PAGE, op=0.2, ru_bytes=16 * PAGE, handles=("II", "PI"))
    ftl = Ftl(g)
    rng = np.random.default_rng(6)
    for i in range(20):
        ftl.write_pages(rng.integers(0, 1 << 12, 500, dtype=np.uint32), ruh=i % 2)
    ftl.trim(100, 50)
    path = str(tmp_path / "ftl.npz")
    save_ftl(ftl, path)
    back = load_ftl(path, g)
    assert back.counters() == ftl.counters()
    assert back.stats() == ftl.stats()
    for k in ftl.arrays:
        if k != "reloc":
            assert np.array_equal(back.arrays[k], ftl.arrays[k]), k
    # the reloaded FTL goes on exactly as the original would
    more = rng.integers(0, 1 << 12, 3000, dtype=np.uint32)
    ftl.write_pages(more, ruh=1)
    back.write_pages(more, ruh=1)
    assert back.counters() == ftl.counters()
    back.check()
    other = Geometry(capacity_bytes=(1 << 12) * PAGE, op=0.3, ru_bytes=16 * PAGE, handles=("II", "PI"))
    with pytest.raises(FormatError, match="another emulated SSD geometry"):
        load_ftl(path, other)
    (tmp_path / "junk.npz").write_bytes(b"not a state")
    with pytest.raises(FormatError, match="not a readable emulated-SSD state file"):
        load_ftl(str(tmp_path / "junk.npz"), g)


ops = st.lists(st.tuples(st.sampled_from(["w", "t", "u"]), st.integers(0, 1023), st.integers(1, 40),
                         st.integers(0, 2)), max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops, st.sampled_from(["greedy", "fifo", "cost-benefit"]))
def test_invariants_hold_after_every_gc(seq, policy):
    g = Geometry(capacity_bytes=1024 * PAGE, op=0.3, ru_bytes=8 * PAGE, handles=("II", "PI", "II"),
                 gc_policy=policy)
    ftl = Ftl(g, debug=True)      # debug: every invariant is checked inside each GC
    for kind, lpn, n, h in seq:
        n = min(n, 1024 - lpn)
        if kind == "w":
            ftl.write(lpn, n, ruh=h)
            ftl.write(lpn, n, ruh=h)          # overwrite: force invalidations
        elif kind == "t":
            ftl.trim(lpn, n)
        else:
            ftl.ruh_update(h)
    ftl.check()
    h_, m_, _ = ftl.counters()
    assert m_ >= h_


def test_validation_grid_reports_each_point_within_two_percent():
    rows = list(grid(pages=1 << 16, ops=(0.12,), ru_pages=(64,), policies=("greedy", "fifo"), warm=6, window=3))
    assert [(r.policy, r.ru_pages) for r in rows] == [("greedy", 64), ("fifo", 64)]
    for r in rows:
        assert abs(r.error) < 0.02, r
        assert r.textbook < r.measured        # the uncorrected formula undershoots


def test_fifo_copies_a_full_victim_instead_of_giving_up():
    # at 7 % OP with small RUs, FIFO's oldest RU is sometimes still fully valid
    g = conventional(1 << 14, 0.07, 16, policy="fifo")
    ftl = Ftl(g, debug=True)
    random_window_waf(ftl, 1 << 14, warm=3, window=1, seed=1)
    ftl.check()


def test_waf_validate_cli(capsys):
    from flashcache.cli import main
    rc = main(["waf", "validate", "--pages", "16384", "--op", "0.28", "--ru-pages", "32", "--warm", "4",
               "--window", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "greedy" in out and "fifo" in out and "2/2 points within 2 %" in out
    rc = main(["waf", "validate", "--pages", "16384", "--op", "0.28", "--ru-pages", "32", "--warm", "0",
               "--window", "1", "--tolerance", "0.0001", "-o", "json"])
    import json
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and not all(r["ok"] for r in doc["rows"])      # no warm-up: far from steady state
