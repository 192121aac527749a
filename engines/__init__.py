"""flashcache's flash engines: BigHash (small items), BlockCache (large items), the router.

This package imports nothing from ``flashcache``: it declares the small Device protocol it
needs in ``engines.device`` and works on any device that fits it.
"""
