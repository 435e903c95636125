"""The exception tree. The CLI catches `TritongenError`, prints one line and exits 2.

TritongenError
├── SpecError          the ensemble spec or one of its model files is wrong
├── PlanError          no placement satisfies the devices, or a plan does not fit its spec
├── ProfileError       a member could not be measured
├── RenderError        the repository cannot be written where asked
├── ServerError        tritonserver is missing, cannot bind, or a model failed to load
└── DeployError        deployment manifests cannot be made for this repository or these options
"""


class TritongenError(Exception):
    """Anything a user can cause and fix; never a bug in tritongen."""


class SpecError(TritongenError):
    pass


class PlanError(TritongenError):
    pass


class ProfileError(TritongenError):
    pass


class RenderError(TritongenError):
    pass


class ServerError(TritongenError):
    pass


class DeployError(TritongenError):
    pass
