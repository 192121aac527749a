"""cffi build of flashcache's io_uring ring (API mode, compiled at install time).

Owns only the build: the C lives in ring.c/ring.h beside this file and includes the
kernel's <linux/io_uring.h> (Debian: linux-libc-dev); liburing is not needed.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
with open(os.path.join(HERE, "ring.h")) as f:
    ffibuilder.cdef(f.read())
ffibuilder.set_source(
    "flashcache.uring._uring_c",
    '#include <stddef.h>\n#include "ring.h"\n',
    # relative to the project root when building from it (setuptools prefers that)
    sources=[os.path.relpath(os.path.join(HERE, "ring.c"))],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.dirname(os.path.dirname(HERE)), verbose=False)
