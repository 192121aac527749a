"""Fixtures the Cache tests share: a FakeClock, and a Cache on the emulated device of
tests.test_cache.cfg that runs on it. Defined here so that a test module takes them as
arguments rather than importing them (tests/test_cache_api.py did, which redefines them)."""
from __future__ import annotations

import pytest

import flashcache
from tests.clock import FakeClock
from tests.test_cache import cfg


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cache(tmp_path, clock):
    c = flashcache.Cache(cfg(tmp_path), clock=clock)
    yield c
    c.close()
