# The cffi modules are compiled by the package's own build (cffi API mode) against the
# kernel's uapi headers; pyproject.toml holds everything else.
from setuptools import Extension, setup

setup(
    # A plain CPython extension beside them (flashcache/uring/results.c): the objects reads
    # return and writes take, handled in C (batches filled or staged inside the ring loop,
    # the devices' single-read hot path). ring.c is compiled in as well.
    ext_modules=[Extension("flashcache.uring._results_c", ["flashcache/uring/results.c", "flashcache/uring/ring.c"],
                           include_dirs=["flashcache/uring", "engines"],
                           extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 # the Cache's per-request structures, one C file per component sharing the
                 # structs of flashcache/_hot.h: the DRAM tier's LRU and KeyOrder (_dram.c), the
                 # latency histogram (_metrics.c), the request core's accelerator (_core.c)
                 # (both modules include engines/_hooks.h: the C hooks passed between them)
                 Extension("flashcache._hot_c", ["flashcache/_core.c", "flashcache/_dram.c", "flashcache/_metrics.c"],
                           include_dirs=["flashcache", "engines"],
                           extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 # BigHash's blocking lookup and insert in one C call each (engines/_core.c;
                 # the bucket core _bucket.c compiled in as well)
                 Extension("engines._core_c", ["engines/_core.c", "engines/_bucket.c", "engines/_bucket_avx2.c"],
                           include_dirs=["engines"], extra_compile_args=["-O2", "-std=gnu11", "-Wall"])],
    cffi_modules=[
        "flashcache/uring/_build.py:ffibuilder",
        "flashcache/emulator/_build.py:ffibuilder",
        "engines/_bucket_build.py:ffibuilder",
    ],
)
