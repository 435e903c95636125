"""The embedded server: binaries found, loopback only, clear failures, clean stops."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, spec_data, write_spec
from tritongen.errors import ServerError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import render_repository
from tritongen.serve.server import EmbeddedServer, find_tritonserver, summarize_log
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


@pytest.fixture
def repository(tmp_path: Path, member_models: list[Path]) -> Path:
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))
    inventory = detect_devices()
    return render_repository(
        ensemble, default_plan(ensemble, inventory), inventory, tmp_path / "repo"
    )


def test_tritonserver_is_found_in_the_wheel() -> None:
    install = find_tritonserver()
    assert install.binary.is_file() and os.access(install.binary, os.X_OK)
    assert (install.backends / "python" / "libtriton_python.so").is_file()


def test_missing_wheel_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="pip install nvidia-pytriton"):
        find_tritonserver(tmp_path / "pytriton")


def test_log_summary_quotes_the_models_own_error() -> None:
    log = (
        "I1125 03:17:31.1 2009 server.cc:1] starting\n"
        "E1125 03:17:33.0 2009 model_lifecycle.cc:654] \"failed to load 'mlp' version 1: "
        'Internal: onnxruntime failed: bad model"\n'
    )
    assert summarize_log(log) == "model mlp failed to load: Internal: onnxruntime failed: bad model"


def test_port_in_use_is_a_clear_error(repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use.*--http-port"):
            EmbeddedServer(repository, http_port=port).start()


@pytest.mark.server
def test_broken_member_stops_start_and_its_error_is_quoted(repository: Path) -> None:
    (repository / "mlp" / "1" / "model.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ServerError, match=r"model mlp failed to load: .*full log"):
        EmbeddedServer(repository, ready_timeout_s=120).start()


@pytest.mark.server
def test_serve_background_prints_json_binds_loopback_and_stops_on_sigterm(repository: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", str(repository), "--background"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(info) >= {"pid", "http_port", "grpc_port", "metrics_port"}
    try:
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f"pid={info['pid']}," in line]
        assert ours, listening
        # gRPC listens on the IPv4-mapped form of the same loopback address.
        assert all(re.search(r"\s(\[::ffff:)?127\.0\.0\.1\]?:", line) for line in ours), ours
    finally:
        os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(info["pid"]):
        time.sleep(0.2)
    assert not _alive(info["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2]
        if Path(f"/proc/{pid}/stat").exists()
        else "X"
    )
    return status != "Z"
