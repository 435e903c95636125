"""tritongen: profile, plan and serve an ensemble of DNNs on Triton Inference Server."""

from tritongen.errors import TritongenError

__version__ = "0.1.0"
__all__ = ["TritongenError", "__version__"]
