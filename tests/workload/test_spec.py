"""flashcache/workload/spec.py: the workload TOML, its presets, and errors that list every
problem at once."""
from __future__ import annotations

import pytest

from flashcache.errors import ConfigError
from flashcache.workload import Dist, load, loads, presets
from flashcache.workload.spec import WorkloadSpec


def test_presets_load_and_describe_themselves():
    assert presets() == ["kvcache", "twitter-like", "write-only"]
    for name in presets():
        spec = load(name)
        assert spec.name == name and spec.describe().startswith(name)
    kv = load("kvcache")
    assert kv.cache_aside and kv.popularity == "zipf" and kv.ops[0] == pytest.approx(0.95)
    assert load("write-only").ops == (0.0, 1.0, 0.0)


def test_kvcache_is_small_value_heavy():
    """Most items are small (BigHash's), the rest large (BlockCache's): small_item_max is 2 KiB."""
    v = load("kvcache").value_size
    small = sum(w for w, lo, hi in v.parts if hi + 32 <= 2048) / sum(w for w, _, _ in v.parts)
    assert small > 0.6 and v.max > 2048


def test_a_full_workload_file():
    spec = loads('''
        [workload]
        name = "mine"
        seed = 7
        keys = 1000
        popularity = "uniform"
        rate = 500
        cache_aside = false
        ops = {get = 3, set = 1}
        key_size = {fixed = 20}
        value_size = {mixture = [{weight = 1, range = ["1KiB", "2KiB"]}, {weight = 3, fixed = 100}]}
        ttl = {range = ["30s", "5m"]}
    ''')
    assert spec.keys == 1000 and spec.seed == 7 and spec.ops == (0.75, 0.25, 0.0)
    assert spec.value_size == Dist(((1.0, 1024, 2048), (3.0, 100, 100)))
    assert spec.ttl == Dist(((1.0, 30, 300),))
    assert spec.value_size.mean == pytest.approx((1536 + 300) / 4)
    assert spec.bind(1 << 30) is spec                     # keys given: nothing to bind


def test_working_set_gives_the_key_count_for_a_cache_size():
    spec = loads('[workload]\nworking_set = 4.0\nkey_size = {fixed = 24}\nvalue_size = {fixed = 1000}')
    assert spec.keys == 0
    assert spec.bind(1 << 20).keys == int(4 * (1 << 20) / 1024)


def test_every_problem_is_listed_at_once_naming_the_key():
    with pytest.raises(ConfigError) as ei:
        loads('''
            [workload]
            sed = 1
            popularity = "zipfian"
            ops = {get = 0.9, sett = 0.1}
            value_size = {range = [500, 100]}
            key_size = {fixed = "1 GB"}
            ttl = {mixture = [{weight = 0, fixed = 1}]}
        ''', "w.toml")
    assert ei.value.errors == [
        'w.toml: workload.sed: unknown key; did you mean "seed"? (known keys here: cache_aside, key_size, '
        "keys, name, ops, popularity, rate, seed, ttl, value_size, working_set, zipf_alpha)",
        'w.toml: workload.popularity = "zipfian": use "zipf" or "uniform"',
        'w.toml: workload.ops.sett: unknown operation; did you mean "set"? (use get, set, delete)',
        "w.toml: workload.value_size.range = [500, 100]: low is above high",
        'w.toml: workload.key_size.fixed = "1 GB": use a size like "1GiB" or "512MiB"',
        "w.toml: workload.ttl.mixture[0].weight = 0: use a number above 0",
    ]


@pytest.mark.parametrize("text,message", [
    ("value_size = {fixed = 1, range = [1, 2]}", "workload.value_size: give exactly one of fixed, range or mixture"),
    ("value_size = {rnage = [1, 2]}", 'workload.value_size.rnage: unknown key; did you mean "range"?'),
    ("value_size = {mixture = []}", "workload.value_size.mixture: use a list of"),
    ("ops = {get = 0}", "workload.ops: at least one operation needs a share above 0"),
    ("zipf_alpha = -1", "workload.zipf_alpha = -1.0: use a number from 0 to 5"),
    ("key_size = {fixed = 0}", "workload.key_size: a key has at least 1 byte"),
])
def test_bad_values_say_what_to_do(text, message):
    with pytest.raises(ConfigError) as ei:
        loads("[workload]\n" + text)
    assert any(message in e for e in ei.value.errors), ei.value.errors


def test_an_unknown_preset_or_file_names_the_presets(tmp_path):
    with pytest.raises(ConfigError, match="no such workload file or preset; presets: kvcache, twitter-like"):
        load("kvcahce")


def test_as_dict_round_trips_through_the_parser():
    from flashcache.workload.spec import from_dict
    for name in presets():
        spec = load(name)
        d = {k: v for k, v in spec.as_dict().items() if k != "source"}
        again = from_dict(d, spec.source)
        assert again == spec
    assert isinstance(spec, WorkloadSpec)
