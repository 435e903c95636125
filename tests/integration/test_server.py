"""The embedded server started for real: loopback only, clear failures, clean stops, restarts
(what needs no start: unit/test_server_parts.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import (
    CLI,
    assert_one_line_error,
    process_alive,
    run_cli,
    spec_data,
    wait_until,
    write_spec,
)
from tests.unit import test_server_parts as unit_half
from tests.unit.test_server_parts import KEY
from tritongen.errors import ServerError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import render_repository
from tritongen.serve.client import EnsembleClient, Protocol
from tritongen.serve.server import EmbeddedServer
from tritongen.serve.watchdog import API_KEY_HEADER, GRPC_API_KEY_HEADER
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

repository = unit_half.repository  # a fixture the unit half of this file shares


@pytest.mark.server
def test_broken_member_stops_start_and_its_error_is_quoted(repository: Path) -> None:
    (repository / "mlp" / "1" / "model.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ServerError, match=r"model mlp failed to load: .*full log"):
        EmbeddedServer(repository, ready_timeout_s=120).start()


@pytest.mark.subprocess
def test_serve_defaults_to_tritons_ports_and_names_the_busy_one(repository: Path) -> None:
    """The README's `serve` then `infer --url 127.0.0.1:8000` must meet: 8000 is the default,
    and when it is taken the command says so (we hold it, or someone else already does)."""
    with socket.socket() as holder:
        with contextlib.suppress(OSError):
            holder.bind(("127.0.0.1", 8000))
            holder.listen()
        result = run_cli("serve", str(repository))
    assert_one_line_error(result, "port 8000 on 127.0.0.1 is in use", "--http-port")


@pytest.mark.subprocess
def test_model_control_beyond_loopback_needs_a_second_flag(repository: Path) -> None:
    result = run_cli("serve", str(repository), "--host", "0.0.0.0", "--model-control")
    assert_one_line_error(
        result, "--model-control on --host 0.0.0.0", "--allow-remote-model-control"
    )


@pytest.mark.subprocess
def test_only_a_key_of_the_safe_alphabet_is_accepted(repository: Path) -> None:
    result = run_cli("serve", str(repository), "--api-key", "short,=:")
    assert_one_line_error(result, "--api-key: use 16-256 characters")


@pytest.fixture(scope="module")
def restricted(member_models: list[Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("restricted")
    ensemble = load_ensemble(load_spec(write_spec(root, spec_data(member_models))))
    inventory = detect_devices()
    repo = render_repository(ensemble, default_plan(ensemble, inventory), inventory, root / "r")
    with EmbeddedServer(repo, model_control=True, api_key=KEY) as running:
        yield running


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_repository_and_shared_memory_apis_need_the_key(
    restricted: EmbeddedServer, protocol: str
) -> None:
    module = httpclient if protocol == "http" else grpcclient
    url = restricted.http_url if protocol == "http" else restricted.grpc_url
    header = API_KEY_HEADER if protocol == "http" else GRPC_API_KEY_HEADER
    client = module.InferenceServerClient(url)
    for call in (client.get_model_repository_index, client.get_system_shared_memory_status):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
        with pytest.raises(InferenceServerException, match="restricted"):
            call(headers={header: "not-the-key-0123456789"})
        call(headers={header: KEY})
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model("ens")
    assert client.is_model_ready("ens")  # health and metadata stay open
    rows = np.random.default_rng(0).random((2, 16), dtype=np.float32)
    assert EnsembleClient(url, "ens", Protocol(protocol)).infer(rows).shape == (2, 5)


@pytest.mark.server
def test_model_control_with_the_key_unloads_and_loads(restricted: EmbeddedServer) -> None:
    client = grpcclient.InferenceServerClient(restricted.grpc_url)
    headers = {GRPC_API_KEY_HEADER: KEY}
    client.unload_model("mlp", headers=headers)
    assert not client.is_model_ready("mlp")
    client.load_model("mlp", headers=headers)
    assert client.is_model_ready("mlp")


@pytest.mark.server
def test_serve_background_prints_json_binds_loopback_and_stops_on_sigterm(repository: Path) -> None:
    info = _serve_in_background(repository, "--api-key", KEY)
    assert set(info) >= {"pid", "server_pid", "http_port", "grpc_port", "metrics_port", "log"}
    assert all(info[f"{p}_port"] > 0 for p in ("http", "grpc", "metrics"))
    try:
        assert info["api_key"] == KEY
        client = httpclient.InferenceServerClient(f"127.0.0.1:{info['http_port']}")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f"pid={info['server_pid']}," in line]
        assert ours, listening
        # gRPC listens on the IPv4-mapped form of the same loopback address.
        assert all(re.search(r"\s(\[::ffff:)?127\.0\.0\.1\]?:", line) for line in ours), ours
    finally:
        os.kill(info["pid"], signal.SIGTERM)
    wait_until(lambda: not process_alive(info["pid"]) and not process_alive(info["server_pid"]), 60)


@pytest.mark.server
def test_serve_killed_outright_takes_its_tritonserver_with_it(repository: Path) -> None:
    info = _serve_in_background(repository)
    assert process_alive(info["server_pid"])
    os.kill(info["pid"], signal.SIGKILL)  # no handler runs: only the kernel can stop the server
    try:
        wait_until(lambda: not process_alive(info["server_pid"]), 60)
    finally:
        if process_alive(info["server_pid"]):
            os.kill(info["server_pid"], signal.SIGKILL)


@pytest.mark.server
def test_a_crashed_tritonserver_is_restarted_on_its_ports_and_reported(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Triton 2.51's Python backend can take the whole server down (benchmarks/soak_bls.md):
    the process that runs it starts it again, and says so."""
    rows = np.random.default_rng(1).random((3, 16), dtype=np.float32)
    with caplog.at_level("WARNING"), EmbeddedServer(repository) as server:
        crashed, ports = server.pid, (server.http_port, server.grpc_port)
        os.kill(crashed, signal.SIGSEGV)
        wait_until(lambda: bool(server.restarts) and server.is_ready(), 180)
        assert server.restarts[0][1:] == (crashed, -signal.SIGSEGV, server.pid)
        assert (server.http_port, server.grpc_port) == ports
        assert EnsembleClient(server.grpc_url, "ens", Protocol.grpc).infer(rows).shape == (3, 5)
    assert f"tritonserver (pid {crashed}) was killed by signal 11 (SIGSEGV); restarted" in (
        caplog.text
    )


CRASHING_MODEL = """
import os, signal, time
from pathlib import Path
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        marker = Path("{marker}")
        if not marker.exists():  # the first time only: take the server down while loading
            marker.write_text("crashed")
            os.kill(os.getppid(), signal.SIGSEGV)
            time.sleep(30)

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "X")])
            for r in requests
        ]
"""
CRASHING_CONFIG = """
name: "crasher"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.mark.server
def test_a_server_that_crashes_while_loading_is_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Triton 2.51's Python backend can abort the server while loading models; `start`
    tries again rather than fail (a model's own load error still fails at once)."""
    marker = tmp_path / "crashed-once"
    model = tmp_path / "repo" / "crasher"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CRASHING_CONFIG)
    (model / "1" / "model.py").write_text(CRASHING_MODEL.replace("{marker}", str(marker)))
    with caplog.at_level("WARNING"), EmbeddedServer(tmp_path / "repo") as server:
        assert marker.exists() and server.is_ready()
    assert "tritonserver crashed while loading its models" in caplog.text


@pytest.mark.server
def test_a_server_that_keeps_dying_is_given_up_with_the_reason(repository: Path) -> None:
    with EmbeddedServer(repository, max_restarts=0) as server:
        os.kill(server.pid, signal.SIGKILL)
        assert server.gave_up.wait(60)
    assert server.failure is not None
    assert "was killed by signal 9 (SIGKILL)" in server.failure
    assert "not restarting it" in server.failure


def _serve_in_background(repository: Path, *options: str) -> dict:
    """`tritongen serve --background` on free ports: the JSON line it prints."""
    free = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    result = subprocess.run(
        [*CLI, "serve", str(repository), "--background", *free, *options],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
