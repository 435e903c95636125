"""Members served together in one Python-backend model (a group), on a real tritonserver:
answers equal the onnxruntime + numpy reference under every rule, a group beside members
served alone works through Triton's scheduler, faults stay confined to their request, and the
served API takes the spec's batch size whatever batches the plan prefers, and a group's
process keeps to its one thread."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import MAX_BATCH, RULES, TRANSFORMS, WEIGHTS, spec_data, write_spec
from tests.faults import NAN_COLUMN, RAISE_COLUMN, faulty_model, marked_rows
from tests.onnx_factory import FEATURES, linear_model, member_outputs, reference_combine
from tritongen.plan.plan import Group, Plan
from tritongen.render.repository import parse_config, render_repository
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

pytestmark = pytest.mark.server

PLANNED_BATCH = 2  # below MAX_BATCH: the plan's batch must not narrow the served API


def grouped_plan(
    names: list[str], grouped: list[str], instances: int = 1, parallel_members: bool = False
) -> Plan:
    """Every member on the CPU at batch PLANNED_BATCH; `grouped` served in one model."""
    groups = {}
    if grouped:
        groups["cpu"] = Group(
            tuple(grouped), {"cpu": instances}, MAX_BATCH, parallel_members=parallel_members
        )
    return Plan(
        allocation={m: {"cpu": instances} for m in names},
        batch_size=dict.fromkeys(names, PLANNED_BATCH),
        threads=dict.fromkeys(names, 1),
        queue_delay_us=dict.fromkeys(names, 0),
        groups=groups,
    )


def _render(
    root: Path,
    repository: Path,
    models: list[Path],
    name: str,
    grouped: list[str],
    parallel_members: bool = False,
    **spec: object,
) -> None:
    data = spec_data(models, name=name, **spec)
    ensemble = load_ensemble(load_spec(write_spec(root, data, f"{name}.yaml")))
    names = [m.name for m in ensemble.members]
    plan = grouped_plan(names, grouped, parallel_members=parallel_members)
    rendered = render_repository(ensemble, plan, detect_devices(), root / name)
    for model in rendered.iterdir():
        if model.is_dir() and not (repository / model.name).exists():
            shutil.copytree(model, repository / model.name)


@pytest.fixture(scope="module")
def faulty_members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("group_fault_members")
    return [linear_model(folder / "steady.onnx", 1), faulty_model(folder / "faulty.onnx", 5)]


@pytest.fixture(scope="module")
def group_server(
    member_models: list[Path], faulty_members: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("groups")
    repository = root / "repository"
    repository.mkdir()
    names = [p.stem for p in member_models]
    for rule in RULES:
        for transform in TRANSFORMS:
            combine = {"rule": rule, "transform": transform}
            _render(
                root, repository, member_models, f"group_{rule}_{transform}", names, combine=combine
            )
    _render(root, repository, member_models, "partial", names[:2])
    _render(root, repository, member_models, "alone", [])
    _render(root, repository, member_models, "parallel_members", names, parallel_members=True)
    faulty = [p.stem for p in faulty_members]
    _render(root, repository, faulty_members, "fragile", faulty)
    _render(root, repository, faulty_members, "fragile_parallel", faulty, parallel_members=True)
    with EmbeddedServer(repository, ready_timeout_s=300) as running:
        yield running


def _rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)


def _expected(models: list[Path], batch: np.ndarray, rule: str, transform: str) -> np.ndarray:
    return reference_combine(member_outputs(models, batch), rule, transform, WEIGHTS)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("rule", RULES)
def test_a_group_of_every_member_answers_the_reference_for_every_rule(
    group_server: EmbeddedServer, member_models: list[Path], rule: str, transform: str
) -> None:
    client = EnsembleClient(group_server.http_url, f"group_{rule}_{transform}")
    for rows in (1, MAX_BATCH):
        batch = _rows(rows, seed=rows)
        np.testing.assert_allclose(
            client.infer(batch),
            _expected(member_models, batch, rule, transform),
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.parametrize("name", ["group_mean_softmax", "parallel_members"])
def test_a_group_splits_a_batch_of_concurrent_requests_back_correctly(
    group_server: EmbeddedServer, member_models: list[Path], name: str
) -> None:
    batches = [_rows(1 + i % MAX_BATCH, seed=200 + i) for i in range(32)]

    def send(batch: np.ndarray) -> np.ndarray:
        return EnsembleClient(group_server.http_url, name).infer(batch)

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(send, batches))
    for batch, answer in zip(batches, answers, strict=True):
        np.testing.assert_allclose(
            answer, _expected(member_models, batch, "mean", "softmax"), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("name", ["partial", "alone"])
def test_a_group_beside_members_served_alone_answers_the_reference(
    group_server: EmbeddedServer, member_models: list[Path], name: str
) -> None:
    batch = _rows(MAX_BATCH, seed=11)
    got = EnsembleClient(group_server.http_url, name).infer(batch)
    np.testing.assert_allclose(
        got, _expected(member_models, batch, "mean", "softmax"), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("name", ["group_mean_softmax", "partial", "alone"])
def test_the_served_model_takes_the_specs_batch_whatever_the_plans_batch(
    group_server: EmbeddedServer, name: str
) -> None:
    config = httpclient.InferenceServerClient(group_server.http_url).get_model_config(name)
    assert config["max_batch_size"] == MAX_BATCH  # the plan prefers PLANNED_BATCH
    EnsembleClient(group_server.http_url, name).infer(_rows(MAX_BATCH, seed=3))


@pytest.mark.parametrize("name", ["fragile", "fragile_parallel"])
def test_a_member_nan_fails_only_its_request_in_a_group(
    group_server: EmbeddedServer, faulty_members: list[Path], name: str
) -> None:
    client = EnsembleClient(group_server.http_url, name)
    with pytest.raises(Exception, match="NaN or Inf"):
        client.infer(marked_rows(2, seed=1, column=NAN_COLUMN))
    healthy = marked_rows(3, seed=2)
    np.testing.assert_allclose(
        client.infer(healthy),
        _expected(faulty_members, healthy, "mean", "softmax"),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["fragile", "fragile_parallel"])
def test_requests_batched_with_one_that_makes_a_member_raise_still_succeed(
    group_server: EmbeddedServer, faulty_members: list[Path], name: str
) -> None:
    def send(batch: np.ndarray) -> np.ndarray | str:
        client = httpclient.InferenceServerClient(group_server.http_url)
        tensor = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        try:
            return client.infer(name, [tensor]).as_numpy("OUTPUT")
        except InferenceServerException as exc:
            return str(exc)

    # Alone, the batch runs in parallel where the plan says so: the member raises in a thread.
    assert "onnxruntime failed" in str(send(marked_rows(2, seed=99, column=RAISE_COLUMN)))
    batches = [marked_rows(2, seed=i, column=RAISE_COLUMN if i == 3 else None) for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(send, batches))
    assert "onnxruntime failed" in str(answers[3])
    for i, (batch, answer) in enumerate(zip(batches, answers, strict=True)):
        if i != 3:
            np.testing.assert_allclose(
                answer, _expected(faulty_members, batch, "mean", "softmax"), rtol=1e-4, atol=1e-5
            )


def test_a_rendered_group_config_lists_its_members_and_parses(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models, name="g")
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, data)))
    names = [m.name for m in ensemble.members]
    repository = render_repository(
        ensemble, grouped_plan(names, names, instances=2), detect_devices(), tmp_path / "r"
    )

    assert sorted(p.name for p in repository.iterdir() if p.is_dir()) == ["g"]  # no members alone
    config = parse_config((repository / "g" / "config.pbtxt").read_text(), "g")
    assert [g.count for g in config.instance_group] == [2]
    assert list(config.dynamic_batching.preferred_batch_size) == [MAX_BATCH]
    version = repository / "g" / "1"
    assert sorted(p.relative_to(version).as_posix() for p in version.glob("*/model.onnx")) == [
        f"{n}/model.onnx" for n in sorted(names)
    ]


def test_parallel_members_share_busy_flags_that_go_with_the_server(
    tmp_path: Path, member_models: list[Path]
) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    names = [p.stem for p in member_models]
    _render(tmp_path, repository, member_models, "flags", names, parallel_members=True)
    with EmbeddedServer(repository, ready_timeout_s=300) as server:
        pid = server.pid
        EnsembleClient(server.http_url, "flags").infer(_rows(1, seed=5))
        flags = list(Path("/dev/shm").glob(f"tritongen-busy-{pid}-*"))
        assert len(flags) == 1 and flags[0].stat().st_size > 0
    assert not list(Path("/dev/shm").glob(f"tritongen-busy-{pid}-*"))


def _runnable_shares(server_pid: int, seconds: float) -> dict[tuple[int, int], float]:
    """Per thread of the server's model processes: the share of samples, taken every few
    milliseconds over `seconds`, in which it was running or waiting to run ('R')."""
    processes = psutil.Process(server_pid).children(recursive=True)
    seen: dict[tuple[int, int], list[bool]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            for thread in process.threads():
                stat = Path(f"/proc/{process.pid}/task/{thread.id}/stat")
                with contextlib.suppress(OSError):
                    state = stat.read_text().rsplit(")", 1)[1].split()[0]
                    seen.setdefault((process.pid, thread.id), []).append(state == "R")
        time.sleep(0.005)
    return {key: sum(states) / len(states) for key, states in seen.items()}


def test_a_groups_process_spins_no_thread_while_requests_come_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # numpy's BLAS gets threads of its own here (a value the user gave the server is kept):
    # OpenBLAS's spin between calls, so only a combine that calls no BLAS leaves them asleep.
    # Members x rows x classes above OpenBLAS's threshold for sharing one product out.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    models = [linear_model(tmp_path / f"wide_{i}.onnx", i, classes=1000) for i in range(3)]
    repository = tmp_path / "repository"
    repository.mkdir()
    names = [p.stem for p in models]
    combine = {"rule": "weighted_mean", "transform": "none"}
    _render(tmp_path, repository, models, "one_thread", names, combine=combine)
    with EmbeddedServer(repository, ready_timeout_s=300) as server:
        stop = threading.Event()

        def send() -> None:  # the HTTP client stays on the thread that made it
            client = EnsembleClient(server.http_url, "one_thread")
            while not stop.is_set():
                client.infer(_rows(MAX_BATCH, seed=7))

        sender = threading.Thread(target=send)
        sender.start()
        try:
            time.sleep(0.5)
            shares = _runnable_shares(server.pid, seconds=1.5)
        finally:
            stop.set()
            sender.join()
    # a spinning thread is runnable all the time; the one that runs the members waits for
    # each request between calls
    assert shares and max(shares.values()) < 0.8, shares
