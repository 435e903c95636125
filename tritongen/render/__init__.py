"""Stage 4, the files Triton reads: the model repository (Jinja2 templates from `templates/`,
every config.pbtxt parsed back into Triton's ModelConfig) and the Kubernetes manifests.

Imports `tritongen.plan` and below.
"""
