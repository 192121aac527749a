"""cffi build of BigHash's bucket and bloom filter core (API mode, compiled at install time).

Owns only the build: the C lives in _bucket.c/_bucket.h beside this file; the hash is
engines/_xxh3.h (xxHash's header inlined, Debian libxxhash-dev: no library to link) with
engines/_xxh3_avx2.c for AVX2 CPUs.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = os.path.dirname(HERE)

ffibuilder = FFI()
with open(os.path.join(HERE, "_bucket.h")) as f:
    ffibuilder.cdef(f.read())
# cffi releases the GIL around every call. These calls are short (one bucket, at most
# 1 MiB) and BigHash relies on them being atomic to other Python threads as the Python
# code they replace was (a lookup warms a bucket filter that an insert in another thread
# may be rewriting), so the module keeps the GIL: the wrappers cffi generates after this
# preamble use these two macros and nothing else to drop it. Keeping it also saves ~50 ns
# per call.
_KEEP_GIL = """
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""
ffibuilder.set_source(
    "engines.bighash._bucket_c",
    '#include <stddef.h>\n#include <stdint.h>\n#include "_bucket.h"\n' + _KEEP_GIL,
    sources=[os.path.relpath(os.path.join(HERE, "_bucket.c")), os.path.relpath(os.path.join(ENGINES, "_xxh3_avx2.c"))],
    include_dirs=[HERE, ENGINES],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.dirname(ENGINES), verbose=False)
