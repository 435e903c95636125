"""Issue 6, part 1 and 4: nothing a user or a client sends gives a traceback, a half-written
repository, a silently wrong answer or an unready server. Faulty members: test_faults.py."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from tests.conftest import (
    MAX_BATCH,
    assert_one_line_error,
    combined_name,
    run_cli,
    spec_data,
    write_spec,
)
from tests.onnx_factory import CLASSES, FEATURES, linear_model
from tritongen.errors import SpecError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, parse_config, render_repository, templates_dir
from tritongen.serve.server import EmbeddedServer
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


CLI_SAMPLES = [
    (b"\x00\xff\xfe garbage", "cannot read"),
    (b"[" * 5000, "nested too deeply"),
    (b"name: x\nmembers:\n  - {name: a, model: a.onnx, weight: .nan}\n", "members.0.weight"),
    (b"!!python/object/apply:os.system ['echo pwned']\n", "YAML"),
]


@pytest.mark.parametrize(("content", "fragment"), CLI_SAMPLES)
def test_cli_build_with_malformed_spec_exits_2_writing_nothing(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    spec = tmp_path / "ensemble.yaml"
    spec.write_bytes(content)
    assert_one_line_error(run_cli("build", str(spec), "-o", str(tmp_path / "out")), fragment)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.yaml"]


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


def test_cli_build_with_inputs_that_match_no_member_exits_2(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models)
    data["members"][0]["model"] = str(two_input_model(tmp_path / "two.onnx"))
    spec = write_spec(tmp_path, data)
    result = run_cli("build", str(spec), "-o", str(tmp_path / "o"))
    assert_one_line_error(
        result, "members.1.model (mlp)", "match no input of the combined model (a, b)", "input_map"
    )
    assert not (tmp_path / "o").exists()


def test_cli_failed_build_keeps_the_previous_repository(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    assert run_cli("build", str(spec), "-o", str(tmp_path / "repo")).returncode == 0
    before = tree(tmp_path / "repo")
    data = spec_data(member_models)
    data["members"][1]["model"] = str(linear_model(tmp_path / "wide.onnx", 9, features=32))
    write_spec(tmp_path, data)
    assert_one_line_error(run_cli("build", str(spec), "-o", str(tmp_path / "repo")), "input shape")
    assert tree(tmp_path / "repo") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]


def test_cli_serve_on_a_taken_port_exits_2(tmp_path: Path, member_models: list[Path]) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    assert run_cli("build", str(spec), "-o", str(tmp_path / "repo")).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        others = ["--http-port", "0", "--metrics-port", "0"]
        result = run_cli("serve", str(tmp_path / "repo"), "--grpc-port", port, *others)
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use", "--grpc-port")


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
    if source.name in ("combine.py", "sessions.py"):
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


def _error(
    protocol: ModuleType, url: str, model: str, array: np.ndarray, datatype: str
) -> tuple[str, str]:
    """(status, message) of the error the server answers, through tritonclient's `protocol`
    module (http or grpc)."""
    client = protocol.InferenceServerClient(url)
    tensor = protocol.InferInput("INPUT", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, [tensor])
    client.close()
    return str(error.value.status()), error.value.message()


def _http_error(url: str, model: str, array: np.ndarray, datatype: str) -> tuple[str, str]:
    return _error(httpclient, url, model, array, datatype)


def _grpc_error(url: str, model: str, array: np.ndarray, datatype: str) -> tuple[str, str]:
    return _error(grpcclient, url, model, array, datatype)


BAD_REQUESTS = {
    "wrong-shape": (np.zeros((2, FEATURES + 3), np.float32), "FP32", "shape"),
    "wrong-rank": (np.zeros((2, 4, 4), np.float32), "FP32", "shape"),
    "wrong-dtype": (np.zeros((2, FEATURES), np.float64), "FP64", "data-type"),
    "batch-above-max": (np.zeros((MAX_BATCH + 1, FEATURES), np.float32), "FP32", "batch"),
}


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("combiner", ["ensemble", "bls"])
@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_request_that_does_not_fit_is_invalid_argument_and_server_stays_ready(
    server: EmbeddedServer, protocol: str, combiner: str, kind: str
) -> None:
    array, datatype, word = BAD_REQUESTS[kind]
    model = combined_name(combiner, "mean", "softmax")
    if protocol == "http":
        status, message = _http_error(server.http_url, model, array, datatype)
        assert status == "400", (status, message)
    else:
        status, message = _grpc_error(server.grpc_url, model, array, datatype)
        assert status == "StatusCode.INVALID_ARGUMENT", (status, message)
    assert word in message.lower()
    assert server.is_ready()
    good = np.ones((1, FEATURES), np.float32)
    tensor = httpclient.InferInput("INPUT", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(good)
    answer = httpclient.InferenceServerClient(server.http_url).infer(model, [tensor])
    assert np.isfinite(answer.as_numpy("OUTPUT")).all()


def _post(url: str) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.server
@pytest.mark.parametrize("action", ["load", "unload"])
def test_remote_load_and_unload_are_refused_by_default(server: EmbeddedServer, action: str) -> None:
    model = combined_name("ensemble", "mean", "softmax")
    status = _post(f"http://{server.http_url}/v2/repository/models/{model}/{action}")
    assert status >= 400
    assert httpclient.InferenceServerClient(server.http_url).is_model_ready(model)
    assert server.is_ready()


@pytest.fixture(scope="module")
def controllable(
    member_models: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("control")
    ensemble = load_ensemble(load_spec(write_spec(root, spec_data(member_models))))
    inventory = detect_devices()
    repo = render_repository(ensemble, default_plan(ensemble, inventory), inventory, root / "r")
    with EmbeddedServer(repo, model_control=True) as running:
        yield running


@pytest.mark.server
def test_model_control_when_asked_allows_unload_and_load(controllable: EmbeddedServer) -> None:
    client = httpclient.InferenceServerClient(controllable.http_url)
    assert client.is_model_ready("ens")
    assert _post(f"http://{controllable.http_url}/v2/repository/models/ens/unload") == 200
    assert not client.is_model_ready("ens")
    assert _post(f"http://{controllable.http_url}/v2/repository/models/ens/load") == 200
    assert client.is_model_ready("ens")
