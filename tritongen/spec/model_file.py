"""Reading one member's ONNX file (a PyTorch member's export): its input and output
signatures, the external data files beside it, its digest, the per-sample shapes it is profiled
and served at (`profile_shape`), and the output that is combined."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnx
from onnx import helper

from tritongen.errors import SpecError
from tritongen.spec.ensemble import Spec
from tritongen.spec.tensors import TRITON_TYPES, MemberModel, TensorSignature

CHUNK = 1 << 20


def member_where(spec: Spec, index: int) -> str:
    return f"{spec.source}: members.{index}.model ({spec.members[index].name})"


def read_member(spec: Spec, index: int) -> MemberModel:
    member = spec.members[index]
    where = member_where(spec, index)
    path = member.model
    if member.kind != "onnx":
        from tritongen.spec.torch_export import export_member

        path = export_member(spec, index)
    data = _read_bytes(where, path)
    try:
        graph = onnx.load_model_from_string(data).graph
    except Exception:  # onnx raises DecodeError, ValueError, ... for garbage
        raise SpecError(f"{where}: {path} is not a valid ONNX model; re-export it") from None
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor(where, i) for i in graph.input if i.name not in initializers)
    outputs = tuple(_tensor(where, o) for o in graph.output)
    if not inputs or not outputs:
        raise SpecError(f"{where}: {path.name} has no inputs or no outputs; re-export it")
    external = external_data_files(where, path, graph)
    return MemberModel(
        name=member.name,
        path=path,
        weight=member.weight,
        inputs=_resolve_shapes(where, spec, index, inputs),
        output=_combined_output_of(where, spec, index, outputs),
        outputs=outputs,
        sha256=_digest(data, path, external),
        external_data=external,
        **_torch_runtime(spec, index),
    )


def _torch_runtime(spec: Spec, index: int) -> dict[str, Any]:
    if spec.members[index].runtime.value != "torch":
        return {}
    from tritongen.spec.torch_script import torchscript_member

    return {"runtime": "torch", "torchscript": torchscript_member(spec, index)}


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


# ----------------------------------------------------------------- external data, digest


def external_data_files(where: str, path: Path, graph: onnx.GraphProto) -> tuple[str, ...]:
    """The files (relative to the model's folder) that hold tensors stored outside it;
    refused when missing or outside that folder."""
    locations: dict[str, None] = {}
    for tensor in _all_tensors(graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        locations.setdefault(entries.get("location", ""), None)
    for location in locations:
        relative = PurePosixPath(location)
        if not location or relative.is_absolute() or ".." in relative.parts:
            raise SpecError(
                f"{where}: {path.name} stores a tensor at {location!r}, outside its folder; "
                "save the external data beside the model (onnx.save(..., location='x.data'))"
            )
        if not (path.parent / relative).is_file():
            raise SpecError(
                f"{where}: {path.name} keeps its weights in {location}, which is not in "
                f"{path.parent}; copy it beside the model"
            )
    return tuple(locations)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _digest(data: bytes, path: Path, external: tuple[str, ...]) -> str:
    """sha256 of the model and of its external data files: new weights, new profile."""
    digest = hashlib.sha256(data)
    for location in external:
        digest.update(location.encode())
        with (path.parent / location).open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ shapes and outputs


def _resolve_shapes(
    where: str, spec: Spec, index: int, inputs: tuple[TensorSignature, ...]
) -> tuple[TensorSignature, ...]:
    """Each input with its dynamic per-sample dims replaced by the declared `profile_shape`;
    an input left dynamic is refused (it would be profiled at a made-up size)."""
    declared = _declared_shapes(where, spec.members[index].profile_shape, inputs)
    resolved = []
    for signature in inputs:
        shape = declared.get(signature.name)
        if shape is None and -1 in signature.dims:
            example = [d if d > 0 else 128 for d in signature.dims]
            form = example if len(inputs) == 1 else {signature.name: example}
            raise SpecError(
                f"{where}: input {signature.name!r} has dynamic dims {_dims(signature.dims)}; "
                f"give the per-sample shape to profile and serve it at, e.g. profile_shape: {form}"
            )
        if shape is not None:
            _check_declared(where, signature, shape)
            signature = replace(signature, dims=tuple(shape))
        resolved.append(signature)
    return tuple(resolved)


def _declared_shapes(
    where: str,
    profile_shape: list[int] | dict[str, list[int]] | None,
    inputs: tuple[TensorSignature, ...],
) -> dict[str, list[int]]:
    if profile_shape is None:
        return {}
    if isinstance(profile_shape, list):
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise SpecError(
                f"{where}: profile_shape is one shape but the model takes {len(inputs)} inputs "
                f"({names}); give {{name: shape}} for each dynamic one"
            )
        return {inputs[0].name: profile_shape}
    unknown = sorted(set(profile_shape) - {i.name for i in inputs})
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise SpecError(
            f"{where}: profile_shape names {unknown[0]!r}, which is not an input ({names})"
        )
    return profile_shape


def _check_declared(where: str, signature: TensorSignature, shape: list[int]) -> None:
    fits = len(shape) == len(signature.dims) and all(
        d < 0 or d == s for d, s in zip(signature.dims, shape, strict=True)
    )
    if not fits:
        raise SpecError(
            f"{where}: profile_shape {shape} does not fit input {signature.name!r} of shape "
            f"{_dims(signature.dims)}; keep its rank and its fixed dims"
        )


def _combined_output_of(
    where: str, spec: Spec, index: int, outputs: tuple[TensorSignature, ...]
) -> TensorSignature:
    """The spec's `output`, else the only output, else the first with a class axis (a fixed
    last dim above 1)."""
    asked = spec.members[index].output
    names = ", ".join(o.name for o in outputs)
    if asked is not None:
        found = next((o for o in outputs if o.name == asked), None)
        if found is None:
            raise SpecError(f"{where}: output {asked!r} is not an output of the model ({names})")
        return found
    if len(outputs) == 1:
        return outputs[0]
    with_classes = [o for o in outputs if o.dims and o.dims[-1] > 1]
    if not with_classes:
        raise SpecError(
            f"{where}: none of the outputs ({names}) has a class axis; name the one to "
            "combine with output: NAME"
        )
    return with_classes[0]


def _dims(dims: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"
