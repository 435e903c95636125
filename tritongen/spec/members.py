"""The ensemble of members: their inputs mapped onto the combined model's, their outputs and
dtypes checked to combine, the values fed to each input. Each member's own file is read by
`tritongen.spec.model_file`.

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

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from tritongen.errors import SpecError
from tritongen.spec.ensemble import Rule, Spec, Transform
from tritongen.spec.model_file import member_where, read_member
from tritongen.spec.tensors import MemberModel, TensorSignature
from tritongen.spec.values import MASK_HINT, Fill, default_fill

SINGLE_INPUT = "INPUT"  # the combined input's name when there is one
COMBINED_OUTPUT = "OUTPUT"
# Tensor names the combined models use for themselves; no combined input may take them.
RESERVED = frozenset({COMBINED_OUTPUT, "ANSWERED"})
RESERVED_PREFIX = "member_"  # the ensemble scheduler's internal tensors: member_0, member_1...


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
