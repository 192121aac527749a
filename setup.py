# The cffi modules are compiled by the package's own build (cffi API mode) against the
# kernel's uapi headers; pyproject.toml holds everything else.
from setuptools import setup

setup(cffi_modules=[
    "flashcache/uring/_build.py:ffibuilder",
    "flashcache/emulator/_build.py:ffibuilder",
    "engines/_bucket_build.py:ffibuilder",
])
