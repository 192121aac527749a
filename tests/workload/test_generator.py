"""flashcache/workload/generator.py: batches of operations drawn as the spec says, the
same for the same seed, with each key's sizes fixed."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flashcache.workload import DELETE, GET, SET, Generator, loads
from flashcache.workload.generator import draw
from flashcache.workload.spec import Dist


def spec(extra: str = "", keys: int = 10_000):
    return loads(f"[workload]\nkeys = {keys}\n" + extra)


def ops_of(gen: Generator, n: int):
    b = gen.batch(n)
    return b.ops, b.keys, b.sizes, b.ttls


def test_the_same_seed_gives_the_same_operations_and_another_seed_others():
    s = spec("seed = 3\nvalue_size = {range = [1, 1000]}")
    assert ops_of(Generator(s), 2000) == ops_of(Generator(s), 2000)
    other = loads("[workload]\nkeys = 10000\nseed = 4\nvalue_size = {range = [1, 1000]}")
    assert ops_of(Generator(other), 2000)[1] != ops_of(Generator(s), 2000)[1]


def test_a_key_always_has_the_same_size_and_its_value_too():
    g = Generator(spec("key_size = {range = [10, 40]}\nvalue_size = {range = [1, 5000]}"))
    seen: dict[bytes, int] = {}
    for _ in range(5):
        b = g.batch(4000)
        for k, v in zip(b.keys, b.sizes):
            assert 10 <= len(k) <= 40
            assert seen.setdefault(k, v) == v
    assert len(seen) > 1000


def test_mixture_weights_and_ranges():
    d = Dist(((0.7, 50, 500), (0.3, 2048, 8192)))
    rng = np.random.default_rng(1)
    x = draw(d, rng.random(200_000), rng.random(200_000))
    small = x <= 500
    assert small.mean() == pytest.approx(0.7, abs=0.01)
    assert x[small].min() == 50 and x[small].max() == 500
    assert x[~small].min() == 2048 and x[~small].max() == 8192
    assert x[small].mean() == pytest.approx(275, rel=0.02)


def test_op_mix_is_as_asked():
    g = Generator(spec("ops = {get = 0.6, set = 0.3, delete = 0.1}"))
    c = Counter(g.batch(100_000).ops)
    assert c[GET] / 1e5 == pytest.approx(0.6, abs=0.01)
    assert c[SET] / 1e5 == pytest.approx(0.3, abs=0.01)
    assert c[DELETE] / 1e5 == pytest.approx(0.1, abs=0.01)


def test_zipf_makes_a_few_keys_hot_uniform_does_not():
    n = 100_000
    z = Counter(Generator(spec("popularity = \"zipf\"\nzipf_alpha = 1.0")).batch(n).keys)
    u = Counter(Generator(spec("popularity = \"uniform\"")).batch(n).keys)
    # Zipf(1) over 10k keys: the most popular key takes 1 / H(10000) ~ 10 % of requests
    assert z.most_common(1)[0][1] / n == pytest.approx(1 / sum(1 / i for i in range(1, 10_001)), rel=0.1)
    assert u.most_common(1)[0][1] / n < 0.001
    top100 = sum(c for _, c in z.most_common(100)) / n
    assert 0.5 < top100 < 0.6                       # H(100) / H(10000) = 0.53


def test_ttls_are_drawn_per_operation_and_time_moves_at_the_rate():
    g = Generator(spec('rate = 1000\nttl = {mixture = [{weight = 1, fixed = "1m"}, {weight = 1, fixed = 0}]}'))
    b1, b2 = g.batch(5000), g.batch(5000)
    assert set(b1.ttls) == {0.0, 60.0} and 0.45 < b1.ttls.count(60.0) / 5000 < 0.55
    assert (b1.time, b2.time) == (0.0, 5.0)


def test_key_bytes_are_unique_even_when_the_size_is_short():
    assert Generator.key_bytes(255, 8) == b"000000ff"
    assert Generator.key_bytes(1 << 40, 4) == b"10000000000"


def test_an_unbound_spec_is_refused():
    with pytest.raises(ValueError, match="bind the spec"):
        Generator(loads("[workload]\nworking_set = 2.0"))
