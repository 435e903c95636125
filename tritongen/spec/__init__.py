"""Stage 1, what the user gives: the ensemble spec (`ensemble.yaml`), each member's ONNX
signature, and the devices to plan for (`DEVICES.json`).

Imports only `tritongen.errors` and `tritongen.paths`.
"""
