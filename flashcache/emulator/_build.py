"""cffi build of the emulator's FTL core (API mode, compiled at install time).

Owns only the build: the C lives in ftl.c/ftl.h beside this file.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
with open(os.path.join(HERE, "ftl.h")) as f:
    ffibuilder.cdef(f.read())
ffibuilder.set_source(
    "flashcache.emulator._ftl_c",
    '#include <stddef.h>\n#include <stdint.h>\n#include "ftl.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, "ftl.c"))],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.dirname(os.path.dirname(HERE)), verbose=False)
