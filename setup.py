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
                 # latency histogram (_metrics.c), the request core's accelerator (_core.c), the
                 # server's text protocol accelerator (_server.c)
                 # (both modules include engines/_hooks.h: the C hooks passed between them)
                 Extension("flashcache._hot_c", ["flashcache/_core.c", "flashcache/_dram.c", "flashcache/_metrics.c",
                                                "flashcache/_server.c"],
                           include_dirs=["flashcache", "engines"],
                           extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 # The engines' C, each beside its Python and owning the state it touches:
                 # BigHash's blocking lookup and insert (the bucket core _bucket.c compiled in),
                 # BlockCache's entry format, index table and lookup, and the router over the
                 # engines' C operations (engines/_engine.h). _xxh3_avx2.c: the hash for AVX2 CPUs.
                 Extension("engines.bighash._core_c",
                           ["engines/bighash/_core.c", "engines/bighash/_bucket.c", "engines/_xxh3_avx2.c"],
                           include_dirs=["engines/bighash", "engines"], extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 Extension("engines.blockcache._core_c", ["engines/blockcache/_core.c", "engines/_xxh3_avx2.c"],
                           include_dirs=["engines"], extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 Extension("engines._router_c", ["engines/_router.c"],
                           include_dirs=["engines"], extra_compile_args=["-O2", "-std=gnu11", "-Wall"]),
                 # the server's writer thread: replies sent beside the event loop
                 Extension("flashcache.server._sender_c", ["flashcache/server/_sender.c"],
                           extra_compile_args=["-O2", "-std=gnu11", "-Wall"])],
    cffi_modules=[
        "flashcache/uring/_build.py:ffibuilder",
        "flashcache/emulator/_build.py:ffibuilder",
        "engines/bighash/_bucket_build.py:ffibuilder",
    ],
)
