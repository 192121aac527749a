"""BigHash, the small-item engine: a fixed array of buckets on one extent, bloom filters in DRAM.

``bighash.py`` is the engine (and the bucket format); ``bloom.py`` the per-bucket bloom
filters; ``_bucket.c``/``_bucket.h`` the per-bucket work in C (cffi, no state);
``_core.c`` the blocking forms in C (the BucketCore, which owns the state they touch).
"""
from .bighash import (
                      BUCKET_HEADER,
                      BUCKET_LAYOUT,
                      CHECKSUM_SEED,
                      ENTRY_HEADER,
                      ENTRY_LAYOUT,
                      FORMAT_VERSION,
                      KEY_SEED,
                      MAGIC,
                      MAX_KEY_LEN,
                      BigHash,
                      InsertResult,
                      key_hash,
)

__all__ = ["BUCKET_HEADER", "BUCKET_LAYOUT", "CHECKSUM_SEED", "ENTRY_HEADER", "ENTRY_LAYOUT", "FORMAT_VERSION",
           "KEY_SEED", "MAGIC", "MAX_KEY_LEN", "BigHash", "InsertResult", "key_hash"]
