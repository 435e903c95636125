"""Stage 3, how the ensemble is laid out on the devices: the plan (`plan.json`), the models that
predict a plan's throughput, and the search (worst-fit placement, then greedy moves) that
chooses one; plans across nodes; a plan checked against the spec; the exact optimum used as a
reference.

Imports `tritongen.profile`, `tritongen.spec` and below; opens no model file.
"""
