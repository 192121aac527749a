"""flashcache's flash engines behind one interface, and the router over them.

``engine.py`` is the Engine interface; each engine is a folder beside it (``bighash/`` for
small items, ``blockcache/`` for large ones) with its C next to its Python; ``navy.py``
routes over a list of engines by size class (its C in ``_router.c``); ``superblock.py``
and ``formats.py`` hold the on-flash formats' one definition each. This package imports
nothing from ``flashcache``: it declares the small Device protocol it needs in
``engines.device`` and works on any device that fits it.
"""
