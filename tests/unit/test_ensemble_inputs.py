"""Ensembles as users have them, at the spec stage: several named inputs and outputs, how
member inputs map onto the combined inputs, dynamic dims, external data, dtypes. Every refusal
is one SpecError line naming the file, the member and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from tests.conftest import write_spec
from tests.multi_models import TOKENS, cast_model, dynamic_model, external_data_model, token_model
from tests.onnx_factory import CLASSES, FEATURES, linear_model
from tritongen.bench.serving_cost import _stand_in_onnx
from tritongen.errors import SpecError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, render_repository
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble
from tritongen.spec.values import Fill


def _ensemble(folder: Path, members: list[dict], **extra: object) -> Ensemble:
    data = {"name": "e", "members": members, "max_batch_size": 4, **extra}
    return load_ensemble(load_spec(write_spec(folder, data)))


def _member(name: str, path: Path, **fields: object) -> dict:
    return {"name": name, "model": str(path), **fields}


def _refused(folder: Path, members: list[dict], **extra: object) -> str:
    with pytest.raises(SpecError) as error:
        _ensemble(folder, members, **extra)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(folder / "ensemble.yaml"))
    return message


# ----------------------------------------------------------------------- input mapping


def test_two_input_members_map_by_name_whatever_their_order(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    b = token_model(tmp_path / "b.onnx", 2, reversed_inputs=True)
    ensemble = _ensemble(tmp_path, [_member("a", a), _member("b", b)])
    assert [(i.name, i.dtype, i.dims) for i in ensemble.inputs] == [
        ("input_ids", "int64", (TOKENS,)),
        ("attention_mask", "int64", (TOKENS,)),
    ]
    assert [i.name for i in ensemble.members[1].inputs] == ["attention_mask", "input_ids"]
    for member in ensemble.members:
        assert dict(member.input_map) == {n: n for n in ("input_ids", "attention_mask")}
        assert member.output.name == "logits"  # the output with a class axis, not `count`
    assert (ensemble.output.name, ensemble.output.dtype) == ("OUTPUT", "float32")


def test_single_input_members_keep_input_and_map_by_position(tmp_path: Path) -> None:
    x = linear_model(tmp_path / "x.onnx", 1, input_name="x")
    pixels = linear_model(tmp_path / "p.onnx", 2, input_name="pixels")
    ensemble = _ensemble(tmp_path, [_member("x", x), _member("p", pixels)])
    assert [i.name for i in ensemble.inputs] == ["INPUT"]
    assert [dict(m.input_map) for m in ensemble.members] == [{"x": "INPUT"}, {"pixels": "INPUT"}]


def test_input_map_names_the_combined_input(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    # (mask, ids) under other names: by position would feed the ids to the mask
    c = token_model(tmp_path / "c.onnx", 2, names=("i", "m"), reversed_inputs=True)
    members = [
        _member("a", a),
        _member("c", c, input_map={"i": "input_ids", "m": "attention_mask"}),
    ]
    ensemble = _ensemble(tmp_path, members)
    assert dict(ensemble.members[1].input_map) == {"m": "attention_mask", "i": "input_ids"}
    assert len(ensemble.inputs) == 2


def test_inputs_that_match_neither_by_name_nor_by_count_are_refused(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    x = linear_model(tmp_path / "x.onnx", 2)
    message = _refused(tmp_path, [_member("a", a), _member("x", x)])
    assert "members.1.model (x)" in message
    assert "match no input of the combined model (input_ids, attention_mask)" in message
    assert "input_map" in message


def test_input_map_naming_an_unknown_member_input_is_refused(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    message = _refused(tmp_path, [_member("a", a, input_map={"tokens": "input_ids"})])
    assert "members.0.input_map: 'tokens' is not an input of a (input_ids, attention_mask)" in (
        message
    )


def test_a_later_member_may_add_an_input_by_name(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    extra = linear_model(tmp_path / "m.onnx", 3, features=TOKENS, input_name="input_ids")
    # `m` reads input_ids as float32 where `a` reads int64: refused, naming both
    message = _refused(tmp_path, [_member("a", a), _member("m", extra)])
    assert "input dtype float32 differs from a's int64 (matched by name)" in message


def test_reserved_combined_input_names_are_refused(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    members = [_member("a", a, input_map={"attention_mask": "OUTPUT"})]
    assert "input name 'OUTPUT' is used by the combined model itself" in _refused(tmp_path, members)


# ------------------------------------------------------------------------------ outputs


def test_output_names_the_combined_output(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    ensemble = _ensemble(tmp_path, [_member("a", a, output="count")], combine={"rule": "max"})
    assert ensemble.members[0].output.name == "count"
    assert [o.name for o in ensemble.members[0].outputs] == ["count", "logits"]
    message = _refused(tmp_path, [_member("a", a, output="hidden")])
    assert "output 'hidden' is not an output of the model (count, logits)" in message


# ------------------------------------------------------------------------------- dtypes


def test_output_dtypes_must_agree_unless_the_spec_names_one(tmp_path: Path) -> None:
    f32 = cast_model(tmp_path / "f32.onnx", 1, TensorProto.FLOAT)
    f16 = cast_model(tmp_path / "f16.onnx", 2, TensorProto.FLOAT, TensorProto.FLOAT16)
    members = [_member("a", f32), _member("b", f16)]
    message = _refused(tmp_path, members)
    assert "members.1.model (b): output dtype float16 differs from a's float32" in message
    assert "set combine.dtype" in message
    assert _ensemble(tmp_path, members, combine={"dtype": "float32"}).output.dtype == "float32"


def test_fp16_members_give_an_fp16_combined_output(tmp_path: Path) -> None:
    a, b = cast_model(tmp_path / "a.onnx", 1), cast_model(tmp_path / "b.onnx", 2)
    ensemble = _ensemble(tmp_path, [_member("a", a), _member("b", b)])
    assert ensemble.output.dtype == "float16" and ensemble.inputs[0].dtype == "float16"


@pytest.mark.parametrize(
    ("combine", "message"),
    [
        ({"rule": "mean", "transform": "none"}, "mean with transform none gives fractions"),
        ({"rule": "max", "transform": "softmax"}, "transform softmax needs float outputs"),
        ({"rule": "max", "transform": "none", "dtype": "float32"}, None),
        ({"rule": "max", "transform": "none"}, None),
    ],
)
def test_integer_outputs_refuse_rules_that_need_floats(
    tmp_path: Path, combine: dict, message: str | None
) -> None:
    votes = cast_model(tmp_path / "v.onnx", 1, TensorProto.FLOAT, TensorProto.INT64)
    if message is None:
        dtype = _ensemble(tmp_path, [_member("v", votes)], combine=combine).output.dtype
        assert dtype == combine.get("dtype", "int64")
        return
    assert message in _refused(tmp_path, [_member("v", votes)], combine=combine)


# ------------------------------------------------------------------ dynamic dimensions


def test_dynamic_dims_need_a_declared_shape(tmp_path: Path) -> None:
    dynamic = dynamic_model(tmp_path / "d.onnx", 1)
    message = _refused(tmp_path, [_member("d", dynamic)])
    assert "input 'x' has dynamic dims [?]" in message and "profile_shape: [128]" in message
    ensemble = _ensemble(tmp_path, [_member("d", dynamic, profile_shape=[FEATURES])])
    assert ensemble.members[0].inputs[0].dims == (FEATURES,)
    assert ensemble.members[0].input_shapes == {"x": [FEATURES]}
    mismatch = _refused(tmp_path, [_member("d", dynamic, profile_shape=[4, 4])])
    assert "profile_shape [4, 4] does not fit input 'x' of shape [?]" in mismatch


# ------------------------------------------------------------------------ external data


def test_external_data_is_found_hashed_and_copied(tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "ext.onnx", 1)
    ensemble = _ensemble(tmp_path, [_member("ext", path)])
    member = ensemble.members[0]
    assert member.external_data == ("ext.weights",)
    inventory = detect_devices()
    repo = render_repository(ensemble, default_plan(ensemble, inventory), inventory, tmp_path / "r")
    version = repo / "ext" / "1"
    assert (version / "ext.weights").read_bytes() == (tmp_path / "ext.weights").read_bytes()
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((1, FEATURES), np.float32)})[0].shape == (1, CLASSES)
    # new weights, new digest (the profile cache is keyed by it)
    weights = bytearray((tmp_path / "ext.weights").read_bytes())
    weights[0] ^= 1
    (tmp_path / "ext.weights").write_bytes(bytes(weights))
    assert _ensemble(tmp_path, [_member("ext", path)]).members[0].sha256 != member.sha256
    (tmp_path / "ext.weights").unlink()
    assert "keeps its weights in ext.weights" in _refused(tmp_path, [_member("ext", path)])


# ------------------------------------------------------------------ the values fed


def test_masks_get_ones_ids_zeros_and_the_spec_may_say_otherwise(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    ensemble = _ensemble(tmp_path, [_member("a", a)])
    sample = ensemble.sample_inputs(3)
    assert (sample["attention_mask"] == 1).all() and (sample["input_ids"] == 0).all()
    ranged = _ensemble(tmp_path, [_member("a", a)], input_values={"input_ids": {"range": [5, 9]}})
    assert ranged.fill("input_ids") == Fill(low=5, high=9)
    ids = ranged.sample_inputs(50)["input_ids"]
    assert ids.dtype == np.int64 and ids.min() >= 5 and ids.max() < 9
    message = _refused(tmp_path, [_member("a", a)], input_values={"tokens": {"value": 1}})
    assert "input_values.tokens: no member takes an input named 'tokens'" in message


def test_stand_in_reads_every_input(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    ensemble = _ensemble(tmp_path, [_member("a", a)])
    _stand_in_onnx(tmp_path / "s.onnx", ensemble.inputs, num_classes=CLASSES)
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    ids = np.arange(2 * TOKENS).reshape(2, TOKENS)
    mask = np.ones((2, TOKENS), np.int64)
    (y,) = session.run(None, {"input_0": ids, "input_1": mask})
    expected = ids.mean(axis=1, keepdims=True) + 1.0
    np.testing.assert_allclose(y, np.repeat(expected, CLASSES, axis=1), rtol=1e-6)


def test_a_remote_member_with_several_inputs_is_refused_at_render(tmp_path: Path) -> None:
    a = token_model(tmp_path / "a.onnx", 1)
    b = token_model(tmp_path / "b.onnx", 2)
    ensemble = _ensemble(tmp_path, [_member("a", a), _member("b", b, url="10.0.0.2:8001")])
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    with pytest.raises(SpecError, match="member b takes 2 inputs and is served on another"):
        render_repository(ensemble, plan, inventory, tmp_path / "r", combiner=Combiner.bls)


# ---------------------------------------------------------------------------- profiling


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"profile_shape": {"x": [-1]}}, "members.0.profile_shape.x.0: Input should be greater"),
        ({"profile_shape": [0]}, "members.0.profile_shape.0: Input should be greater"),
        ({"example_input": [4]}, "example_input is for PyTorch members"),
    ],
)
def test_a_field_of_several_forms_is_described_in_the_form_meant(
    tmp_path: Path, fields: dict, message: str
) -> None:
    path = linear_model(tmp_path / "a.onnx", 1)
    assert message in _refused(tmp_path, [_member("a", path, **fields)])
