"""Every spec or model mistake is one SpecError line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto

from tests.conftest import spec_data, write_spec
from tests.onnx_factory import linear_model
from tritongen.errors import SpecError
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


def _load(path: Path):
    return load_ensemble(load_spec(path))


def test_valid_spec_resolves_model_paths_relative_to_the_file(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models)
    data["members"][0]["model"] = "m/linear.onnx"
    linear_model(tmp_path / "m" / "linear.onnx", 1)
    ensemble = _load(write_spec(tmp_path, data))
    assert ensemble.members[0].path == (tmp_path / "m" / "linear.onnx").resolve()
    assert ensemble.inputs[0].dims == (16,) and ensemble.output.dims == (5,)
    assert [m.weight for m in ensemble.members] == [1.0, 2.0, 0.5]


BAD_SPECS = [
    ({"name": "a/b"}, "name: 'a/b' is not a valid name"),
    ({"name": 'x"; import os'}, "is not a valid name"),
    ({"name": "ok\nnext"}, "is not a valid name"),
    ({"members": []}, "members: List should have at least 1 item"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"combine": {"rule": "median"}}, "combine.rule: Input should be"),
    ({"combine": {"transform": "sigmoid"}}, "combine.transform"),
    ({"max_batch_size": 0}, "max_batch_size: Input should be greater than or equal to 1"),
    ({"max_batch_size": "big"}, "max_batch_size: Input should be a valid integer"),
    ({"min_members": 4}, "min_members=4 exceeds the 3 members"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SPECS)
def test_bad_spec_raises_one_line_naming_the_field(
    tmp_path: Path, member_models: list[Path], override: dict, message: str
) -> None:
    path = write_spec(tmp_path, spec_data(member_models, **override))
    with pytest.raises(SpecError) as error:
        _load(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("member_change", "message"),
    [
        ({"name": "../evil"}, "members.1.name"),
        ({"name": "linear"}, "appears twice"),
        ({"weight": 0}, "members.1.weight: must be a finite number > 0"),
        ({"weight": -1.5}, "must be a finite number > 0"),
        ({"weight": float("nan")}, "must be a finite number > 0"),
        ({"model": "missing.onnx"}, "not found; fix the path"),
        ({"extra": 1}, "members.1.extra: unknown key"),
    ],
)
def test_bad_member_raises_one_line(
    tmp_path: Path, member_models: list[Path], member_change: dict, message: str
) -> None:
    data = spec_data(member_models)
    data["members"][1].update(member_change)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _load(write_spec(tmp_path, data))


def test_missing_spec_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmembers: [\n  - a: b\n")
    with pytest.raises(SpecError, match=r"YAML syntax error at line \d+, column \d+"):
        load_spec(path)


def test_spec_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(path)


def test_corrupt_model_is_named(tmp_path: Path, member_models: list[Path]) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    data = spec_data(member_models)
    data["members"][2]["model"] = str(corrupt)
    with pytest.raises(
        SpecError, match=r"members\.2\.model \(tanh\): .* is not a valid ONNX model"
    ):
        _load(write_spec(tmp_path, data))


def test_member_with_different_input_width_is_refused(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models)
    data["members"][1]["model"] = str(linear_model(tmp_path / "wide.onnx", 4, features=32))
    with pytest.raises(SpecError, match=r"input shape \[\?, 32\] differs from linear's \[\?, 16\]"):
        _load(write_spec(tmp_path, data))


def test_member_with_different_class_count_is_refused(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models)
    data["members"][1]["model"] = str(linear_model(tmp_path / "c7.onnx", 4, classes=7))
    with pytest.raises(SpecError, match="output shape"):
        _load(write_spec(tmp_path, data))


def test_member_with_different_dtype_is_refused(tmp_path: Path, member_models: list[Path]) -> None:
    data = spec_data(member_models)
    data["members"][1]["model"] = str(
        linear_model(tmp_path / "f64.onnx", 4, elem_type=TensorProto.DOUBLE)
    )
    with pytest.raises(SpecError, match="input dtype float64 differs"):
        _load(write_spec(tmp_path, data))


def test_fixed_batch_dimension_is_recorded(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "fixed.onnx", 1, batch=1)
    ensemble = _load(
        write_spec(tmp_path, {"name": "e", "members": [{"name": "f", "model": str(path)}]})
    )
    assert ensemble.members[0].max_batch_limit == 1
