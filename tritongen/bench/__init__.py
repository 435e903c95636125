"""Stage 6, measuring what is served: perf_analyzer, the serving cost of one call, the
side-by-side comparison against the baselines and the bound, the measured-search baseline
(hill climb) and the plots.

Imports `tritongen.serve` and below.
"""
