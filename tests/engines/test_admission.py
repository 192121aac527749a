"""Admission policies: each decides as it says."""
import pytest

from engines import admission


def test_accept_all_and_random():
    assert all(admission.AcceptAll().accept(i, 100) for i in range(100))
    r = admission.RandomAdmission(0.25, seed=1)
    share = sum(r.accept(i, 100) for i in range(20000)) / 20000
    assert share == pytest.approx(0.25, abs=0.02)
    assert not any(admission.RandomAdmission(0.0).accept(i, 1) for i in range(1000))
    with pytest.raises(ValueError, match="probability = 1.5: use a number from 0 to 1"):
        admission.RandomAdmission(1.5)


def test_reject_first_admits_on_the_second_offer_within_the_window():
    a = admission.RejectFirstAdmission(window_keys=4)
    assert a.accept(1, 10) is False
    assert a.accept(1, 10) is True
    assert a.accept(1, 10) is False          # admitted once: it starts over
    for k in range(100, 110):                # push key 2 out of both generations
        a.accept(k, 10)
    a2 = admission.RejectFirstAdmission(window_keys=4)
    a2.accept(2, 10)
    for k in range(100, 108):
        a2.accept(k, 10)
    assert a2.accept(2, 10) is False         # forgotten after two windows
    assert a2.stats()["tracked_keys"] <= 8


def test_dynamic_random_holds_the_target_write_rate():
    now = [0.0]
    a = admission.DynamicRandomAdmission(1000.0, window_s=1.0, seed=3, clock=lambda: now[0])
    # each admitted item writes 100 bytes; 100 offers per second would be 10 000 B/s
    rates = []
    for second in range(40):
        written = 0
        for i in range(100):
            if a.accept(i, 100):
                a.record_write(100)
                written += 100
        rates.append(written)
        now[0] += 1.0
    assert a.probability < 0.2
    assert sum(rates[-10:]) / 10 == pytest.approx(1000, rel=0.35)
    # the probability moves at most 25 % per window
    b = admission.DynamicRandomAdmission(1.0, window_s=1.0, clock=lambda: now[0])
    b.record_write(10**9)
    now[0] += 1.0
    b.accept(0, 1)
    assert b.probability == pytest.approx(0.75)


def test_dynamic_random_rejects_large_items_more():
    a = admission.DynamicRandomAdmission(1e9, seed=5)
    small = sum(a.accept(i, 1000) for i in range(5000))
    large = sum(a.accept(i, 1 << 20) for i in range(5000))
    assert small == 5000 and large < 500


def test_make_by_name():
    assert admission.make("accept-all").name == "accept-all"
    assert admission.make("random", probability=0.5).name == "random"
    assert admission.make("dynamic-random", target_bytes_per_s=1e6).name == "dynamic-random"
    assert admission.make("reject-first").name == "reject-first"
    with pytest.raises(ValueError, match='admission policy "lru": use accept-all, random'):
        admission.make("lru")
