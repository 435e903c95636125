"""Stage 2, how fast each member runs: the profile (`profile.json`) and the profiler that
measures it in child processes, with its cache.

Imports `tritongen.spec` and below.
"""
