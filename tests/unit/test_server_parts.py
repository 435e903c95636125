"""The embedded server's parts that start nothing: binaries found, log summaries, the access
policy, clear failures before a start (started servers: integration/test_server.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import spec_data, write_spec
from tritongen.errors import ServerError
from tritongen.plan.plan import default_plan
from tritongen.render.repository import render_repository
from tritongen.serve.server import (
    EmbeddedServer,
    access_key,
    find_tritonserver,
    free_port,
    model_counters,
    server_environment,
    summarize_log,
)
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

KEY = "test-key-0123456789abcdef"


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


def test_metrics_that_do_not_answer_are_a_server_error_not_a_traceback() -> None:
    # a CI run once read the counters before Triton had opened its metrics port
    with pytest.raises(ServerError, match=r"metrics at 127\.0\.0\.1:\d+ did not answer"):
        model_counters(f"127.0.0.1:{free_port()}")


def test_port_in_use_is_a_clear_error(repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use.*--http-port"):
            EmbeddedServer(repository, http_port=port).start()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "", "node-a"])
def test_beyond_loopback_the_restricted_apis_always_get_a_key(host: str) -> None:
    generated = access_key(host, model_control=False, confirmed=False, api_key=None)
    assert generated is not None and len(generated) >= 16
    assert access_key(host, model_control=False, confirmed=False, api_key=KEY) == KEY
    assert access_key(host, model_control=True, confirmed=True, api_key=None) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_on_loopback_the_apis_are_restricted_only_when_asked(host: str) -> None:
    assert access_key(host, model_control=True, confirmed=False, api_key=None) is None
    assert access_key(host, model_control=False, confirmed=False, api_key=KEY) == KEY


def test_the_models_processes_get_one_blas_thread_unless_the_user_gave_a_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install = find_tritonserver()
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    env = server_environment(install)
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "3"
