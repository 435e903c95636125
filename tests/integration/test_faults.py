"""Issue 6, part 2: members that fail. A member that returns NaN, one that raises, one that is
late and one whose Python-backend process is killed under load, on a real tritonserver: the
server stays ready, only the affected requests fail (or, in BLS mode with `min_members`, are
answered by the members that did answer, as `ANSWERED` says), and later requests succeed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import CLI, WEIGHTS, spec_data, write_spec
from tests.faults import (
    NAN_COLUMN,
    RAISE_COLUMN,
    SLOW_COLUMN,
    SLOW_SECONDS,
    faulty_model,
    marked_rows,
    write_slow_wrapper,
)
from tests.onnx_factory import linear_model, member_outputs, mlp_model, reference_combine
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, render_repository
from tritongen.serve.server import POLL_SECONDS, EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

pytestmark = pytest.mark.server

# Combined models over the members linear (healthy), faulty (NaN / raise) and slow (sleeps).
COMBINED = {
    "ens": (Combiner.ensemble, {}),
    "bls_all": (Combiner.bls, {}),  # default: every member must answer, no timeout
    "bls_two": (Combiner.bls, {"min_members": 2, "member_timeout_ms": 1500}),
}
EVERY_MEMBER_NEEDED = ["ens", "bls_all"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fault_members")
    return [
        linear_model(folder / "linear.onnx", 1),
        faulty_model(folder / "faulty.onnx", 5),
        mlp_model(folder / "slow.onnx", 2),
    ]


@pytest.fixture(scope="module")
def fault_server(
    members: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("fault_repo")
    repository = root / "repository"
    repository.mkdir()
    inventory = detect_devices()
    for name, (combiner, extra) in COMBINED.items():
        spec = load_spec(write_spec(root, spec_data(members, name=name, **extra), f"{name}.yaml"))
        ensemble = load_ensemble(spec)
        plan = default_plan(ensemble, inventory)
        rendered = render_repository(ensemble, plan, inventory, root / name, combiner=combiner)
        for model in rendered.iterdir():
            if model.is_dir() and not (repository / model.name).exists():
                model.rename(repository / model.name)
    write_slow_wrapper(repository / "slow" / "1")
    # A killed member leaves requests Triton waits for when it stops (30 s by default).
    quick_exit = ("--exit-timeout-secs=5",)
    with EmbeddedServer(repository, ready_timeout_s=300, extra_args=quick_exit) as running:
        yield running


def ask(server: EmbeddedServer, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs by name; raises InferenceServerException on an error response."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], client_timeout=60)
        names = ["OUTPUT"] + (["ANSWERED"] if model.startswith("bls") else [])
        return {name: result.as_numpy(name) for name in names}
    finally:
        client.close()


def expected(
    members: list[Path], batch: np.ndarray, which: tuple[int, ...] = (0, 1, 2)
) -> np.ndarray:
    chosen = [members[i] for i in which]
    weights = [WEIGHTS[i] for i in which]
    return reference_combine(member_outputs(chosen, batch), "mean", "softmax", weights)


def assert_healthy(server: EmbeddedServer, members: list[Path], model: str) -> None:
    assert server.is_ready()
    batch = marked_rows(3, seed=42)
    got = ask(server, model, batch)
    np.testing.assert_allclose(got["OUTPUT"], expected(members, batch), rtol=1e-4, atol=1e-5)
    if "ANSWERED" in got:
        assert got["ANSWERED"].all()


@pytest.mark.parametrize("model", list(COMBINED))
def test_healthy_rows_match_the_reference_with_faulty_members_present(
    fault_server: EmbeddedServer, members: list[Path], model: str
) -> None:
    assert_healthy(fault_server, members, model)


def test_serving_makes_the_repository_poller_reload_nothing(fault_server: EmbeddedServer) -> None:
    """The stubs' own __pycache__ would look like a change to the poller (see precompile)."""
    time.sleep(2 * POLL_SECONDS + 1)
    log = fault_server.log_text()
    for model in ("linear", "faulty", "slow", "ens_combine", "bls_all", "bls_two"):
        assert log.count(f"successfully loaded '{model}'") == 1, model


@pytest.mark.parametrize("model", EVERY_MEMBER_NEEDED)
def test_member_nan_fails_only_that_request_when_every_member_is_needed(
    fault_server: EmbeddedServer, members: list[Path], model: str
) -> None:
    with pytest.raises(InferenceServerException, match="NaN or Inf"):
        ask(fault_server, model, marked_rows(4, seed=1, column=NAN_COLUMN, rows=(2,)))
    assert_healthy(fault_server, members, model)


def test_member_nan_row_is_answered_by_the_others_with_min_members(
    fault_server: EmbeddedServer, members: list[Path]
) -> None:
    batch = marked_rows(4, seed=2, column=NAN_COLUMN, rows=(1,))
    got = ask(fault_server, "bls_two", batch)
    assert got["ANSWERED"].tolist() == [[True, True, True], [True, False, True], *[[True] * 3] * 2]
    healthy = [0, 2, 3]
    full = expected(members, batch[healthy])
    np.testing.assert_allclose(got["OUTPUT"][healthy], full, rtol=1e-4, atol=1e-5)
    without_faulty = expected(members, batch[[1]], which=(0, 2))
    np.testing.assert_allclose(got["OUTPUT"][[1]], without_faulty, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", EVERY_MEMBER_NEEDED)
def test_member_that_raises_fails_only_that_request_when_every_member_is_needed(
    fault_server: EmbeddedServer, members: list[Path], model: str
) -> None:
    with pytest.raises(InferenceServerException, match="onnxruntime failed"):
        ask(fault_server, model, marked_rows(3, seed=3, column=RAISE_COLUMN))
    assert_healthy(fault_server, members, model)


def test_member_that_raises_is_left_out_with_min_members(
    fault_server: EmbeddedServer, members: list[Path]
) -> None:
    batch = marked_rows(3, seed=4, column=RAISE_COLUMN)
    got = ask(fault_server, "bls_two", batch)
    assert got["ANSWERED"].tolist() == [[True, False, True]] * 3
    np.testing.assert_allclose(
        got["OUTPUT"], expected(members, batch, which=(0, 2)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("model", EVERY_MEMBER_NEEDED)
def test_requests_batched_with_a_failing_one_still_succeed(
    fault_server: EmbeddedServer, members: list[Path], model: str
) -> None:
    """The member (and the BLS combiner) retry each request alone when a batch fails."""
    batches = [marked_rows(1 + i % 4, seed=10 + i) for i in range(24)]
    batches[5] = marked_rows(2, seed=99, column=RAISE_COLUMN)
    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(lambda b: _outcome(fault_server, model, b), batches))
    assert isinstance(outcomes[5], InferenceServerException)
    for index, (batch, outcome) in enumerate(zip(batches, outcomes, strict=True)):
        if index != 5:
            assert isinstance(outcome, np.ndarray), outcome
            np.testing.assert_allclose(outcome, expected(members, batch), rtol=1e-4, atol=1e-5)


def _outcome(server: EmbeddedServer, model: str, batch: np.ndarray) -> object:
    try:
        return ask(server, model, batch)["OUTPUT"]
    except InferenceServerException as exc:
        return exc


def test_late_member_is_left_out_after_member_timeout_ms(
    fault_server: EmbeddedServer, members: list[Path]
) -> None:
    batch = marked_rows(2, seed=6, column=SLOW_COLUMN, rows=(0, 1))
    started = time.monotonic()
    got = ask(fault_server, "bls_two", batch)
    assert time.monotonic() - started < SLOW_SECONDS - 1
    assert got["ANSWERED"].tolist() == [[True, True, False]] * 2
    np.testing.assert_allclose(
        got["OUTPUT"], expected(members, batch, which=(0, 1)), rtol=1e-4, atol=1e-5
    )
    time.sleep(SLOW_SECONDS)  # the slow member finishes its sleep; its late answer is dropped
    assert_healthy(fault_server, members, "bls_two")


def stub_pid(server: EmbeddedServer, model: str) -> int:
    needle = f"/{model}/1/model.py"
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            if any(needle in part for part in child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no Python-backend process for {model}")


class Load:
    """Threads sending healthy requests until stopped; every answer is checked."""

    def __init__(self, server: EmbeddedServer, members: list[Path], models: list[str]) -> None:
        self.server, self.members, self.models = server, members, models
        self.stop = threading.Event()
        self.successes: list[float] = []  # times of correct answers
        self.failures: list[str] = []
        self.wrong: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, index: int) -> None:
        rng = np.random.default_rng(index)
        while not self.stop.is_set():
            model = self.models[int(rng.integers(len(self.models)))]
            batch = rng.standard_normal((int(rng.integers(1, 5)), 16)).astype(np.float32)
            try:
                got = ask(self.server, model, batch)["OUTPUT"]
            except InferenceServerException as exc:
                self.failures.append(exc.message())
                continue
            if np.allclose(got, expected(self.members, batch), rtol=1e-4, atol=1e-5):
                self.successes.append(time.monotonic())
            else:
                self.wrong.append(model)


def test_killed_member_process_fails_in_flight_requests_only_and_is_restarted(
    fault_server: EmbeddedServer, members: list[Path]
) -> None:
    victim = stub_pid(fault_server, "slow")
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        Load(fault_server, members, ["ens", "bls_all"]) as load,
    ):
        in_flight = pool.submit(_outcome, fault_server, "ens", marked_rows(1, 7, SLOW_COLUMN))
        time.sleep(1.0)  # the slow request is now inside the member, asleep
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        assert isinstance(in_flight.result(timeout=60), InferenceServerException)
        deadline = killed_at + 90
        while (
            time.monotonic() < deadline
            and len([t for t in load.successes if t > killed_at + 1]) < 10
        ):
            time.sleep(0.5)
    assert not load.wrong, load.wrong
    assert all("slow" in message for message in load.failures), load.failures  # only its requests
    assert len([t for t in load.successes if t > killed_at + 1]) >= 10, load.failures[-3:]
    assert fault_server.is_ready()
    assert fault_server.watchdog is not None
    assert "slow" in [name for _, name in fault_server.watchdog.reloads]
    assert stub_pid(fault_server, "slow") != victim  # reloaded: a new process
    for model in COMBINED:
        assert_healthy(fault_server, members, model)


@pytest.mark.parametrize(
    "control",
    [[], ["--model-control", "--api-key", "watchdog-key-0123456789"]],
    ids=["poll", "explicit-with-key"],
)
def test_background_server_has_a_watchdog_that_reloads_a_killed_member(
    members: list[Path], tmp_path: Path, control: list[str]
) -> None:
    """`--background` leaves a process of its own that runs the server and its watchdog; in
    explicit mode behind a key, the watchdog asks for the reload with the key."""
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, spec_data(members[:1], name="solo"))))
    inventory = detect_devices()
    repo = render_repository(ensemble, default_plan(ensemble, inventory), inventory, tmp_path / "r")
    free = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    command = [*CLI, "serve", str(repo), *free, *control]
    started = subprocess.run(
        [*command, "--background"], capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout.strip().splitlines()[-1])
    server = psutil.Process(info["pid"])
    try:
        victim = _stubs_of(server, "linear")[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _stubs_of(server, "linear") in ([], [victim]):
            time.sleep(0.5)
        assert _stubs_of(server, "linear") not in ([], [victim])
        url = f"127.0.0.1:{info['http_port']}"
        _wait_until_answers(url, "solo", members[:1])
        if not control:  # once is enough: the server itself crashes, and comes back
            os.kill(info["server_pid"], signal.SIGSEGV)
            report = f"tritonserver (pid {info['server_pid']}) was killed by signal 11"
            deadline = time.monotonic() + 180  # reported once the new one is ready
            while report not in Path(info["log"]).read_text():
                assert time.monotonic() < deadline, "no restart reported"
                time.sleep(0.5)
            _wait_until_answers(url, "solo", members[:1])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert not psutil.pid_exists(info["server_pid"])  # tritonserver ended with it
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(repo) in " ".join(p.info["cmdline"] or [])
    ]


def _stubs_of(server: psutil.Process, model: str) -> list[int]:
    needle = f"/{model}/1/model.py"
    found = []
    for child in server.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(needle in p for p in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _wait_until_answers(url: str, model: str, members: list[Path]) -> None:
    batch = marked_rows(2, seed=8)
    deadline = time.monotonic() + 60
    while True:
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        try:
            got = client.infer(model, [tensor]).as_numpy("OUTPUT")
            break
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            client.close()
    want = reference_combine(member_outputs(members, batch), "mean", "softmax", WEIGHTS[:1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
