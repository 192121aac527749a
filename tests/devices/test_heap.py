"""heap.keep_freed: batched results stop faulting the heap in again (glibc only)."""
import os
import subprocess
import sys

import pytest

from flashcache.devices import heap

PROBE = r"""
import resource, sys
from flashcache.devices import heap
if sys.argv[1] == "prime":
    heap.keep_freed(4 << 20)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batch = lambda: [bytes(4096) for _ in range(512)]   # one read_many's results, 2 MiB
batch()
f0 = faults()
for _ in range(20):
    batch()                                          # made, then dropped by the caller
print(faults() - f0)
"""

glibc = pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                           reason="glibc's malloc thresholds only")


def _faults(mode: str, **env) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env})
    return int(out.stdout)


@glibc
def test_primed_heap_keeps_a_batch_of_results_mapped():
    # without it glibc trims the freed 2 MiB and each batch faults hundreds of pages back in
    assert _faults("plain") > 20 * 64
    assert _faults("prime") < 20 * 4


@glibc
def test_an_owner_choice_of_thresholds_stands(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap._dynamic() is False
    assert _faults("prime", MALLOC_TRIM_THRESHOLD_="131072") > 20 * 64


def test_keep_freed_only_grows(monkeypatch):
    monkeypatch.setattr(heap, "_primed", 0)
    monkeypatch.setattr(heap, "_dynamic", lambda: True)
    assert heap.keep_freed(1 << 20) == 1 << 20
    assert heap.keep_freed(1 << 10) == 1 << 20
    assert heap.keep_freed(1 << 30) == 32 << 20      # glibc's ceiling
    monkeypatch.setattr(heap, "_primed", 0)
    monkeypatch.setattr(heap, "_dynamic", lambda: False)
    assert heap.keep_freed(1 << 20) == 0
