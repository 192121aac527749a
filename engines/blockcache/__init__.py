"""BlockCache, the large-item engine: a log of equal regions on one extent, a DRAM index.

``blockcache.py`` is the engine; ``entry.py`` the on-flash entry format; ``index.py`` the
numpy hash index; ``regions.py`` region states and the DRAM buffer; ``eviction.py`` the
region eviction policies; ``reinsertion.py`` what survives an eviction; ``_core.c`` the
entry format, the index table and the lookup in C (the Core, which owns what they touch).
"""
from .blockcache import BlockCache, InsertResult
from .entry import ENTRY_HEADER, ENTRY_LAYOUT, FORMAT_VERSION, HEADER_SIZE, MAGIC, key_hash

__all__ = ["BlockCache", "InsertResult", "ENTRY_HEADER", "ENTRY_LAYOUT", "FORMAT_VERSION", "HEADER_SIZE", "MAGIC",
           "key_hash"]
