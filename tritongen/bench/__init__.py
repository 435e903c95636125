"""Stage 6, measuring what is served: perf_analyzer, the serving cost of one call, the
comparison in one run against the baselines and the bound, the measured-search baseline
(hill climb) and the plots.

Imports `tritongen.serve` and below.
"""
