"""Write-amplification experiments on the whole stack: one run (experiment.py), sweeps of
runs (sweep.py) and their plots (plot.py), behind ``flashcache waf run|sweep|plot``.

Owns experiments only: the emulated SSD is flashcache.emulator, the workloads
flashcache.workload, and the analytical models flashcache.emulator.model.
"""
