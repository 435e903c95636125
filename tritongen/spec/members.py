"""Read each member's ONNX signature and check that the members can form one ensemble.

A member may take several named inputs and return several outputs. What every later stage
(and every rendering of the combined model) needs is decided here once:

- `Ensemble.inputs`: the combined model's inputs, as served (names, dtypes, per-sample dims).
  One input is served as `INPUT`; several keep their shared names.
- `MemberModel.input_map`: for each member input, the combined input it is fed from.
- `MemberModel.output`: the one output of the member that is combined.
- `Ensemble.output`: the combined output, `OUTPUT`, in the combined dtype.

Member inputs map onto combined inputs by the member's `input_map`, else by name, else (when
none of a member's input names is known yet) by position; the combined inputs are the first
member's, plus any input a later member adds by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnx
from onnx import helper

from tritongen.errors import SpecError
from tritongen.spec.ensemble import Rule, Spec, Transform
from tritongen.spec.values import MASK_HINT, Fill, default_fill

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
SINGLE_INPUT = "INPUT"  # the combined input's name when there is one
COMBINED_OUTPUT = "OUTPUT"
# Tensor names the combined models use for themselves; no combined input may take them.
RESERVED = frozenset({COMBINED_OUTPUT, "ANSWERED"})
RESERVED_PREFIX = "member_"  # the ensemble scheduler's internal tensors: member_0, member_1...
CHUNK = 1 << 20


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


@dataclass(frozen=True)
class Ensemble:
    spec: Spec
    members: tuple[MemberModel, ...]
    inputs: tuple[TensorSignature, ...]  # the combined model's, as served
    output: TensorSignature  # OUTPUT, in the combined dtype
    input_values: Mapping[str, Fill] = field(default_factory=dict)  # combined input -> fill

    @property
    def num_classes(self) -> int:
        return self.output.dims[-1] if self.output.dims and self.output.dims[-1] > 0 else 1

    def fill(self, combined_input: str) -> Fill:
        """The values tritongen feeds this combined input when it makes inputs itself."""
        signature = next(i for i in self.inputs if i.name == combined_input)
        names = self._member_names(combined_input)
        hint = next((n for n in names if MASK_HINT in n.lower()), combined_input)
        return self.input_values.get(combined_input) or default_fill(hint, signature.dtype)

    def member_fill(self, member: MemberModel, member_input: str) -> Fill:
        return self.fill(member.input_map[member_input])

    def sample_inputs(self, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
        """`rows` samples of every combined input, with the values of `fill`."""
        rng = np.random.default_rng(seed)
        return {
            i.name: self.fill(i.name).sample(rng, i.dtype, (rows, *i.dims)) for i in self.inputs
        }

    @staticmethod
    def member_feed(
        member: MemberModel, combined: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The member's own inputs, taken from arrays of the combined inputs."""
        return {mine: combined[theirs] for mine, theirs in member.input_map.items()}

    def _member_names(self, combined_input: str) -> list[str]:
        """The names member inputs fed from `combined_input` have, the combined name first."""
        names = [combined_input]
        for member in self.members:
            names += [mine for mine, theirs in member.input_map.items() if theirs == combined_input]
        return names


def load_ensemble(spec: Spec) -> Ensemble:
    """Open every member's model, map their inputs onto the combined inputs and check that
    they agree on the combined inputs and on the combined output."""
    members = tuple(read_member(spec, index) for index in range(len(spec.members)))
    members, inputs = map_inputs(spec, members)
    _check_outputs(spec, members)
    output = TensorSignature(
        COMBINED_OUTPUT, combined_dtype(spec, members), members[0].output.dims, None
    )
    ensemble = Ensemble(spec=spec, members=members, inputs=inputs, output=output)
    return replace(ensemble, input_values=_input_values(spec, ensemble))


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


# --------------------------------------------------------------------- input mapping


def map_inputs(
    spec: Spec, members: tuple[MemberModel, ...]
) -> tuple[tuple[MemberModel, ...], tuple[TensorSignature, ...]]:
    """Each member with its input_map (member input -> combined input as served), and the
    combined inputs."""
    combined: dict[str, TensorSignature] = {}  # combined name (before serving) -> signature
    owner: dict[str, str] = {}  # combined name -> the member it was first seen in
    mappings = []
    for index, member in enumerate(members):
        mapping, how = _member_mapping(spec, index, member, list(combined))
        for mine, theirs in mapping.items():
            signature = next(i for i in member.inputs if i.name == mine)
            if theirs not in combined:
                combined[theirs], owner[theirs] = signature, member.name
                continue
            alone = len(member.inputs) == 1
            where = member_where(spec, index)
            matched = "by input_map" if mine in (spec.members[index].input_map or {}) else how
            _check_same_input(where, signature, combined[theirs], owner[theirs], matched, alone)
        mappings.append(mapping)
    served = _served_names(spec, list(combined))
    inputs = tuple(replace(s, name=served[n], batch_dim=None) for n, s in combined.items())
    mapped = tuple(
        replace(m, input_map={mine: served[theirs] for mine, theirs in mapping.items()})
        for m, mapping in zip(members, mappings, strict=True)
    )
    return mapped, inputs


def _member_mapping(
    spec: Spec, index: int, member: MemberModel, known: list[str]
) -> tuple[dict[str, str], str]:
    """The member's inputs -> combined names, and how they were matched (for errors)."""
    where = member_where(spec, index)
    names = [i.name for i in member.inputs]
    explicit = dict(spec.members[index].input_map or {})
    unknown = sorted(set(explicit) - set(names))
    if unknown:
        raise SpecError(
            f"{spec.source}: members.{index}.input_map: {unknown[0]!r} is not an input of "
            f"{member.name} ({', '.join(names)})"
        )
    rest = [n for n in names if n not in explicit]
    by_name = [n for n in rest if n in known]
    if not known or explicit or by_name:
        return explicit | {n: n for n in rest}, "by name"
    if len(rest) == len(known):
        return dict(zip(rest, known, strict=True)), "by position"
    raise SpecError(
        f"{where}: its inputs ({', '.join(rest)}) match no input of the combined model "
        f"({', '.join(known)}) by name, and there are {len(rest)} of them for {len(known)}, so "
        "they cannot be matched by position; map them with input_map: {member input: name}"
    )


def _check_same_input(
    where: str, mine: TensorSignature, theirs: TensorSignature, owner: str, how: str, alone: bool
) -> None:
    label = "input" if alone else f"input {mine.name!r}"
    for what, a, b in (
        ("dtype", mine.dtype, theirs.dtype),
        ("shape", _shape(mine), _shape(theirs)),
    ):
        if a != b:
            raise SpecError(
                f"{where}: {label} {what} {a} differs from {owner}'s {b} (matched {how}); "
                "all members must share one input and one output signature"
            )


def _served_names(spec: Spec, combined: list[str]) -> dict[str, str]:
    """One combined input is served as INPUT (what single-input clients send); several keep
    their names, which must not be one of the combined model's own tensor names."""
    if len(combined) == 1:
        return {combined[0]: SINGLE_INPUT}
    for name in combined:
        if name in RESERVED or name.startswith(RESERVED_PREFIX):
            raise SpecError(
                f"{spec.source}: input name {name!r} is used by the combined model itself; "
                "rename it with input_map: {" + name + ": another_name} on the members"
            )
    return {n: n for n in combined}


# ----------------------------------------------------------------- outputs and dtypes


def _check_outputs(spec: Spec, members: tuple[MemberModel, ...]) -> None:
    first = members[0]
    for index, member in enumerate(members[1:], start=1):
        if _shape(member.output) != _shape(first.output):
            raise SpecError(
                f"{member_where(spec, index)}: output shape {_shape(member.output)} differs "
                f"from {first.name}'s {_shape(first.output)}; all members must share one "
                "input and one output signature"
            )


def combined_dtype(spec: Spec, members: tuple[MemberModel, ...]) -> str:
    """The spec's `combine.dtype`, else the members' common output dtype; refused when they
    differ, or when the rule needs floats and it is not one."""
    dtype = spec.combine.dtype or _common_output_dtype(spec, members)
    _check_rule_dtype(spec, members, dtype)
    return dtype


def _common_output_dtype(spec: Spec, members: tuple[MemberModel, ...]) -> str:
    first = members[0]
    for index, member in enumerate(members[1:], start=1):
        if member.output.dtype != first.output.dtype:
            raise SpecError(
                f"{member_where(spec, index)}: output dtype {member.output.dtype} differs "
                f"from {first.name}'s {first.output.dtype}; set combine.dtype (e.g. "
                "float32) to combine them in one dtype"
            )
    return first.output.dtype


def _check_rule_dtype(spec: Spec, members: tuple[MemberModel, ...], dtype: str) -> None:
    rule, transform = spec.combine.rule, spec.combine.transform
    if transform is Transform.softmax:
        for index, member in enumerate(members):
            if not member.output.is_float:
                raise SpecError(
                    f"{member_where(spec, index)}: transform softmax needs float outputs and "
                    f"{member.output.name!r} is {member.output.dtype}; use transform: none"
                )
    if np.dtype(dtype).kind != "f" and (rule is not Rule.max or transform is Transform.softmax):
        raise SpecError(
            f"{spec.source}: combine.rule {rule.value} with transform {transform.value} gives "
            f"fractions, which {dtype} cannot hold; set combine.dtype: float32 (only max "
            "without softmax keeps an integer or bool dtype)"
        )


def _input_values(spec: Spec, ensemble: Ensemble) -> dict[str, Fill]:
    """`input_values` keyed by combined input; a key may also be a member input's name."""
    values: dict[str, Fill] = {}
    aliases = {i.name: i.name for i in ensemble.inputs}
    for member in ensemble.members:
        aliases |= {
            mine: theirs for mine, theirs in member.input_map.items() if mine not in aliases
        }
    for key, given in spec.input_values.items():
        if key not in aliases:
            raise SpecError(
                f"{spec.source}: input_values.{key}: no member takes an input named {key!r} "
                f"(inputs: {', '.join(sorted(aliases))})"
            )
        values[aliases[key]] = given.fill()
    return values


def _shape(tensor: TensorSignature) -> str:
    return "[" + ", ".join(["?", *("?" if d < 0 else str(d) for d in tensor.dims)]) + "]"


def _dims(dims: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"
