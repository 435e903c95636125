"""Issue 6, part 1 and 4: nothing a user or a client sends gives a traceback, a half-written
repository, a silently wrong answer or an unready server: the parts in this process (the CLI
and a real server: integration/test_reliability_served.py; faulty members: test_faults.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import (
    spec_data,
    write_spec,
)
from tests.onnx_factory import CLASSES, FEATURES, linear_model
from tritongen.errors import SpecError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, parse_config, render_repository, templates_dir
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- spec: what test_spec.py does not already cover ---------------------------------------

MISSING_OR_MISTYPED = [
    ("members", None, "members: required field is missing"),
    ("name", None, "name: required field is missing"),
    ("members", "linear.onnx", "members: Input should be a valid list"),
    ("members", [["linear.onnx"]], "members.0: expected an object, got list"),
    ("combine", "mean", "combine: expected an object, got str"),
    ("name", 12, "name: Input should be a valid string"),
    ("min_members", 0, "min_members: Input should be greater than or equal to 1"),
    ("member_timeout_ms", "soon", "member_timeout_ms: Input should be a valid integer"),
    ("max_batch_size", 1.5, "max_batch_size: Input should be a valid integer"),
]


@pytest.mark.parametrize(("key", "value", "message"), MISSING_OR_MISTYPED)
def test_missing_or_mistyped_top_level_field_is_one_line(
    tmp_path: Path, member_models: list[Path], key: str, value: object, message: str
) -> None:
    data = spec_data(member_models)
    if value is None:
        del data[key]
    else:
        data[key] = value
    path = write_spec(tmp_path, data)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


HOSTILE_MEMBER_NAMES = [
    'a"b',
    "it's",
    "two\nlines",
    "__import__('os').system('id')",
    "a\\b",
    "/abs",
    "x/../y",
    "",
    "é",
    "a" * 65,
]


@pytest.mark.parametrize("name", HOSTILE_MEMBER_NAMES)
def test_member_name_that_is_not_a_plain_identifier_is_refused(
    tmp_path: Path, member_models: list[Path], name: str
) -> None:
    data = spec_data(member_models)
    data["members"][0]["name"] = name
    with pytest.raises(SpecError, match=r"members\.0\.name: .* is not a valid name"):
        load_spec(write_spec(tmp_path, data))


@pytest.mark.parametrize(
    ("member_change", "message"),
    [
        ({"weight": "heavy"}, "members.0.weight: Input should be a valid number"),
        ({"weight": float("inf")}, "members.0.weight: must be a finite number > 0"),
        ({"model": None}, "members.0.model: Input is not a valid path"),
        ({"model": "bad\0path.onnx"}, "members.0.model: contains a NUL byte"),
    ],
)
def test_mistyped_member_field_is_one_line(
    tmp_path: Path, member_models: list[Path], member_change: dict, message: str
) -> None:
    data = spec_data(member_models)
    data["members"][0].update(member_change)
    path = write_spec(tmp_path, data)
    with pytest.raises(SpecError) as error:
        load_ensemble(load_spec(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_member_without_model_is_one_line(tmp_path: Path, member_models: list[Path]) -> None:
    data = spec_data(member_models)
    del data["members"][2]["model"]
    with pytest.raises(SpecError, match=r"members\.2\.model: required field is missing"):
        load_spec(write_spec(tmp_path, data))


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join([*lines, "name: bomb", "members: *a8", ""]))
    with pytest.raises(SpecError, match="too large"):
        load_spec(path)


def test_spec_file_that_is_binary_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(SpecError, match=r"spec\.yaml: cannot read"):
        load_spec(path)


def test_spec_path_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path)


# --- spec: property-based -----------------------------------------------------------------

SPEC_KEYS = ["name", "members", "combine", "rule", "transform", "max_batch_size", "devices",
             "min_members", "member_timeout_ms", "model", "weight"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["mean", "softmax", "linear.onnx", "../x.onnx", "a\0b", "", "-1"])
)
keys = st.sampled_from(SPEC_KEYS) | st.text(max_size=8) | st.integers()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
members = st.lists(
    st.dictionaries(st.sampled_from(["name", "model", "weight", "extra"]), scalars, max_size=4),
    max_size=4,
)
near_specs = st.fixed_dictionaries(
    {"name": scalars, "members": members},
    optional={k: scalars | documents for k in SPEC_KEYS[2:]},
)


def _only_spec_errors(path: Path) -> None:
    try:
        load_ensemble(load_spec(path))
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents | near_specs)
def test_any_yaml_document_gives_a_spec_or_one_spec_error(scratch: Path, document: object) -> None:
    path = scratch / "doc.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    _only_spec_errors(path)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_gives_a_spec_or_one_spec_error(scratch: Path, text: str | bytes) -> None:
    path = scratch / "text.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _only_spec_errors(path)


# --- models ---------------------------------------------------------------------------------


def two_input_model(path: Path) -> Path:
    w = np.ones((FEATURES, CLASSES), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "W"], ["y"])],
        "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", FEATURES]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _written(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (two_input_model, r"its inputs \(a, b\) match no input of the combined model \(x\)"),
        (lambda p: _written(p, b'{"not": "onnx"}'), "is not a valid ONNX model"),
        (lambda p: _written(p, b""), "has no inputs or no outputs"),
        (lambda p: p.mkdir() or p, "is a folder"),
    ],
    ids=["two-inputs", "json", "empty-file", "folder"],
)
def test_member_file_that_is_not_a_usable_model_is_named(
    tmp_path: Path, member_models: list[Path], make, message: str
) -> None:
    data = spec_data(member_models)
    data["members"][1]["model"] = str(make(tmp_path / "odd.onnx"))
    with pytest.raises(SpecError, match=rf"members\.1\.model \(mlp\): .*{message}"):
        load_ensemble(load_spec(write_spec(tmp_path, data)))


# --- security of what is rendered ----------------------------------------------------------


@pytest.fixture
def hostile_tensor_names(tmp_path: Path) -> Path:
    """Members whose ONNX tensor names (user strings) try to break out of config.pbtxt."""
    names = ['x" } ] parameters { key: "k', "in\nput\\", "'''; import os #"]
    paths = [
        linear_model(tmp_path / f"m{i}.onnx", i, input_name=n, output_name=n + "_out")
        for i, n in enumerate(names)
    ]
    return write_spec(tmp_path, spec_data(paths))


@pytest.mark.parametrize("combiner", list(Combiner))
def test_hostile_tensor_names_stay_data_and_python_is_never_generated(
    tmp_path: Path, hostile_tensor_names: Path, combiner: Combiner
) -> None:
    ensemble = load_ensemble(load_spec(hostile_tensor_names))
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    repo = render_repository(ensemble, plan, inventory, tmp_path / "r", combiner=combiner)
    for member in ensemble.members:
        config = parse_config((repo / member.name / "config.pbtxt").read_text(), member.name)
        assert config.input[0].name == member.inputs[0].name
        assert config.output[0].name == member.output.name
    for source in repo.rglob("*.py"):  # copied byte for byte: no user string can be in them
        assert source.read_bytes() == (templates_dir() / _template_of(source)).read_bytes()


def _template_of(source: Path) -> str:
    if source.name in ("batching.py", "combine.py", "sessions.py"):
        return source.name
    config = (source.parent.parent / "config.pbtxt").read_text()
    if 'key: "members"' in config:
        return "combiner_bls.py"
    if 'key: "weights"' in config:
        return "combine_step.py"
    return "member_model.py"


def test_rendered_files_are_not_world_writable_even_with_umask_0(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))
    inventory = detect_devices()
    previous = os.umask(0)
    try:
        repo = render_repository(
            ensemble, default_plan(ensemble, inventory), inventory, tmp_path / "r"
        )
    finally:
        os.umask(previous)
    writable = [p for p in [repo, *repo.rglob("*")] if p.stat().st_mode & stat.S_IWOTH]
    assert not writable


# --- requests that do not fit the model -----------------------------------------------------
