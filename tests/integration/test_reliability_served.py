"""Issue 6, part 1 and 4, with processes: the CLI never gives a traceback or a half-written
repository, and a real server answers a request that does not fit with an error and stays
ready (in-process parts: unit/test_reliability.py; faulty members: test_faults.py)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import (
    MAX_BATCH,
    assert_one_line_error,
    combined_name,
    run_cli,
    spec_data,
    write_spec,
)
from tests.onnx_factory import FEATURES, linear_model
from tests.unit.test_reliability import tree, two_input_model
from tritongen.plan.plan import default_plan
from tritongen.render.repository import render_repository
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

CLI_SAMPLES = [
    (b"\x00\xff\xfe garbage", "cannot read"),
    (b"[" * 5000, "nested too deeply"),
    (b"name: x\nmembers:\n  - {name: a, model: a.onnx, weight: .nan}\n", "members.0.weight"),
    (b"!!python/object/apply:os.system ['echo pwned']\n", "YAML"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("content", "fragment"), CLI_SAMPLES)
def test_cli_build_with_malformed_spec_exits_2_writing_nothing(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    spec = tmp_path / "ensemble.yaml"
    spec.write_bytes(content)
    assert_one_line_error(run_cli("build", str(spec), "-o", str(tmp_path / "out")), fragment)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.yaml"]


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_cli_failed_build_keeps_the_previous_repository(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    assert run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--quick").returncode == 0
    before = tree(tmp_path / "repo")
    data = spec_data(member_models)
    data["members"][1]["model"] = str(linear_model(tmp_path / "wide.onnx", 9, features=32))
    write_spec(tmp_path, data)
    failed = run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--quick")
    assert_one_line_error(failed, "input shape")
    assert tree(tmp_path / "repo") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]


@pytest.mark.subprocess
def test_cli_serve_on_a_taken_port_exits_2(tmp_path: Path, member_models: list[Path]) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    assert run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--quick").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        others = ["--http-port", "0", "--metrics-port", "0"]
        result = run_cli("serve", str(tmp_path / "repo"), "--grpc-port", port, *others)
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use", "--grpc-port")


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
