"""flashcache: a key-value flash cache in the style of CacheLib's Navy, with NVMe FDP
placement over io_uring.

The front door is ``flashcache.open(config)`` / ``flashcache.Cache(config)`` (see
``Cache``), and ``flashcache.AsyncCache`` for asyncio; the exceptions all derive from
``FlashCacheError``.
"""
from .errors import (ClosedError, ConfigError, DeviceError, DeviceInUseError, FlashCacheError, ForkedError,
                     FormatError, NvmeError, UringUnavailableError)

__all__ = ["Cache", "AsyncCache", "open", "FlashCacheError", "ConfigError", "DeviceError", "FormatError", "NvmeError",
           "ClosedError", "DeviceInUseError", "ForkedError", "UringUnavailableError"]


def __getattr__(name: str):
    # Cache pulls in the engines and numpy; keep `import flashcache.config` (the CLI, tools) light.
    if name in ("Cache", "open"):
        from . import cache
        return getattr(cache, name)
    if name == "AsyncCache":
        from .async_cache import AsyncCache
        return AsyncCache
    raise AttributeError(f"module 'flashcache' has no attribute {name!r}")
