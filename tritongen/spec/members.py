"""Read each member's ONNX signature and check that the members can form one ensemble."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from tritongen.errors import SpecError
from tritongen.spec.ensemble import Spec

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


@dataclass(frozen=True)
class MemberModel:
    """One member with the facts every later stage needs from its ONNX file."""

    name: str
    path: Path
    weight: float
    input: TensorSignature
    output: TensorSignature
    sha256: str

    @property
    def max_batch_limit(self) -> int | None:
        """The largest batch the model accepts, None when its batch dimension is dynamic."""
        return self.input.batch_dim


@dataclass(frozen=True)
class Ensemble:
    spec: Spec
    members: tuple[MemberModel, ...]

    @property
    def input(self) -> TensorSignature:
        return self.members[0].input

    @property
    def output(self) -> TensorSignature:
        return self.members[0].output

    @property
    def num_classes(self) -> int:
        return self.output.dims[-1] if self.output.dims else 1


def load_ensemble(spec: Spec) -> Ensemble:
    """Open every member's ONNX file and check they share one input and one output shape."""
    members = tuple(
        read_member(spec, index, m.name, m.model, m.weight) for index, m in enumerate(spec.members)
    )
    _check_agreement(spec, members)
    return Ensemble(spec=spec, members=members)


def read_member(spec: Spec, index: int, name: str, path: Path, weight: float) -> MemberModel:
    where = f"{spec.source}: members.{index}.model ({name})"
    data = _read_bytes(where, path)
    try:
        model = onnx.load_model_from_string(data)
        graph = model.graph
    except Exception:  # onnx raises DecodeError, ValueError, ... for garbage
        raise SpecError(f"{where}: {path} is not a valid ONNX model; re-export it") from None
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise SpecError(
            f"{where}: {path.name} has {len(inputs)} inputs and {len(graph.output)} outputs; "
            "a member must take one input tensor and return one output tensor"
        )
    return MemberModel(
        name=name,
        path=path,
        weight=weight,
        input=_tensor(where, inputs[0]),
        output=_tensor(where, graph.output[0]),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _read_bytes(where: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{where}: {path} not found; fix the path (relative to the spec)") from None
    except IsADirectoryError:
        raise SpecError(f"{where}: {path} is a folder; point to an .onnx file") from None
    except OSError as exc:
        raise SpecError(f"{where}: cannot read {path} ({exc.strerror})") from None


def _tensor(where: str, value: onnx.ValueInfoProto) -> TensorSignature:
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        raise SpecError(f"{where}: tensor {value.name!r} has no static rank; export with shapes")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    except Exception:
        dtype = "unknown"
    if dtype not in TRITON_TYPES:
        raise SpecError(f"{where}: tensor {value.name!r} has unsupported element type {dtype}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    if not dims:
        raise SpecError(f"{where}: tensor {value.name!r} is a scalar; a batch dimension is needed")
    return TensorSignature(
        name=value.name,
        dtype=dtype,
        dims=tuple(dims[1:]),
        batch_dim=dims[0] if dims[0] > 0 else None,
    )


def _check_agreement(spec: Spec, members: tuple[MemberModel, ...]) -> None:
    first = members[0]
    for index, member in enumerate(members[1:], start=1):
        where = f"{spec.source}: members.{index}.model ({member.name})"
        for what, mine, theirs in (
            ("input dtype", member.input.dtype, first.input.dtype),
            ("input shape", _shape(member.input), _shape(first.input)),
            ("output shape", _shape(member.output), _shape(first.output)),
        ):
            if mine != theirs:
                raise SpecError(
                    f"{where}: {what} {mine} differs from {first.name}'s {theirs}; "
                    "all members must share one input and one output signature"
                )


def _shape(tensor: TensorSignature) -> str:
    return "[" + ", ".join(["?", *("?" if d < 0 else str(d) for d in tensor.dims)]) + "]"
