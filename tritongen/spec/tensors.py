"""What tritongen knows of one member's model file: its tensor signatures (name, dtype, dims)
and the `MemberModel` every later stage reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# numpy dtype name -> Triton data type
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


@dataclass(frozen=True)
class TensorSignature:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    dims: tuple[int, ...]  # per-sample dims, -1 where dynamic
    batch_dim: int | None  # fixed size of the leading (batch) dimension, None when dynamic

    @property
    def triton_type(self) -> str:
        return TRITON_TYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return np.dtype(self.dtype).kind == "f"


@dataclass(frozen=True)
class MemberModel:
    """One member with the facts every later stage needs from its model file."""

    name: str
    path: Path  # the ONNX file (for a PyTorch member, its cached export)
    weight: float
    inputs: tuple[TensorSignature, ...]  # as served: dynamic dims resolved by profile_shape
    output: TensorSignature  # the output that is combined
    sha256: str  # of the model file and its external data
    # member input -> combined input as served; filled by map_inputs
    input_map: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[TensorSignature, ...] = ()  # every output of the model
    external_data: tuple[str, ...] = ()  # files beside `path` that hold its tensors
    runtime: str = "onnxruntime"  # or "torch": then `torchscript` is the file that runs
    torchscript: Path | None = None

    @property
    def served_file(self) -> Path:
        """The file a served instance (and its profile) runs."""
        return self.torchscript if self.torchscript is not None else self.path

    @property
    def output_index(self) -> int:
        """The combined output's position among the model's outputs."""
        names = [o.name for o in self.outputs]
        return names.index(self.output.name) if self.output.name in names else 0

    @property
    def max_batch_limit(self) -> int | None:
        """The largest batch the model accepts, None when its batch dimension is dynamic."""
        fixed = [i.batch_dim for i in self.inputs if i.batch_dim is not None]
        return min(fixed) if fixed else None

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        """Per-sample shape of each input, as profiled and served."""
        return {i.name: list(i.dims) for i in self.inputs}
