"""Stage 5, running it: the embedded tritonserver process, the watchdog that reloads a model
whose Python-backend process died, and the tritonclient wrapper that sends requests.

Imports `tritongen.render` and below.
"""
