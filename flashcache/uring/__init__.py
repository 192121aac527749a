"""io_uring for flashcache: a small C ring (ring.c, built by cffi) and the Python Ring.

Only this package and flashcache.devices do I/O.
"""
from .ring import Completion, Ring, address_of

__all__ = ["Ring", "Completion", "address_of"]
