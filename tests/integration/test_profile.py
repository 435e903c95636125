"""The profiler: real onnxruntime sessions in real child processes, on tiny ONNX models built
here. Budgets are small, so figures are coarse; the tests check what must hold anyway."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.onnx_models import (
    child_killed_at_batch_8,
    even_batches_only,
    fake_point,
    mlp,
    unrunnable,
    write_spec,
)
from tritongen.errors import ProfileError, SpecError
from tritongen.profile.cache import PointCache, PointKey
from tritongen.profile.concurrency import instances_together
from tritongen.profile.profile import Profile, load_profile
from tritongen.profile.profiler import (
    default_batch_sizes,
    parse_batch_sizes,
    point_seconds,
    profile_ensemble,
    require_measured,
    run_in_child,
)
from tritongen.profile.worker import (
    ConcurrencyPoint,
    Failure,
    GpuProcessMemory,
    InputFeed,
    Job,
    JobFailure,
    Message,
    Point,
    check_providers,
    run_job,
    session_settings,
)
from tritongen.spec.devices import Device, Inventory, detect_cpu
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 1.0  # whole profile: a few ms of timing per point
CPU = Device(id="cpu", kind="cpu", device_class="cpu", memory_bytes=2**33, cores=2)


@dataclass
class CountingRunner:
    """The real runner, counting the child processes it starts."""

    jobs: int = 0

    def __call__(self, job: Job, on_message: Callable[[Message], None]) -> None:
        self.jobs += 1
        run_in_child(job, on_message)


@dataclass
class CountingTogether:
    """The real k-instances-together measurement, counting its runs."""

    runs: int = 0

    def __call__(self, job: Job, batch: int, instances: int) -> ConcurrencyPoint:
        self.runs += 1
        return instances_together(job, batch, instances)


def ensemble_of(folder: Path, members: dict[str, Path], max_batch_size: int = 8) -> Ensemble:
    return load_ensemble(load_spec(write_spec(folder, members, max_batch_size)))


def profile(ensemble: Ensemble, cache: Path, **options: Any) -> Profile:
    options = {"budget_s": BUDGET_S, "progress": False, "cache_dir": cache, **options}
    return profile_ensemble(ensemble, Inventory((CPU,)), **options)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "small": mlp(folder / "small.onnx", [64, 16, 10]),
        "large": mlp(folder / "large.onnx", [64, 1536, 1536, 10], seed=1),
        "fixed": mlp(folder / "fixed.onnx", [64, 32, 10], batch=1, seed=2),
    }


@pytest.fixture(scope="module")
def measured(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Ensemble, Profile, Path, CountingRunner]:
    folder = tmp_path_factory.mktemp("measured")
    ensemble = ensemble_of(folder, models)
    runner = CountingRunner()
    return ensemble, profile(ensemble, folder / "cache", runner=runner), folder / "cache", runner


# ------------------------------------------------------------------ real measurements


def test_profile_has_an_entry_per_batch_with_positive_throughput(measured: Any) -> None:
    _, result, _, _ = measured
    for member in ("small", "large"):
        entries = result.entries(member, "cpu")
        assert sorted(entries) == [1, 2, 4, 8]
        for entry in entries.values():
            assert entry.throughput > 0
            assert entry.memory_bytes > 0
            assert entry.extra["threads"] == 2
            assert entry.extra["runs"] >= 9
            assert entry.extra["latency_ms"] > 0
            assert entry.extra["spread"] >= 0
            assert set(entry.extra["throughput_by_threads"]) == {"1", "2"}


def test_larger_model_is_slower_and_takes_more_memory(measured: Any) -> None:
    _, result, _, _ = measured
    small, large = result.entries("small", "cpu")[8], result.entries("large", "cpu")[8]
    assert large.throughput < small.throughput / 3
    # ~9.5 MB of weights more; the session's own overhead is the same for both
    assert large.memory_bytes > small.memory_bytes + 6_000_000


def test_fixed_batch_member_runs_its_batch_and_lists_the_others_as_skipped(
    measured: Any,
) -> None:
    _, result, _, _ = measured
    assert sorted(result.entries("fixed", "cpu")) == [1]
    skipped = [s for s in result.skipped if s["member"] == "fixed"]
    assert sorted(s["batch"] for s in skipped) == [2, 4, 8]
    assert all("fixes its batch dimension to 1" in s["reason"] for s in skipped)


def test_profile_extra_carries_cpu_cost_overhead_and_versions(measured: Any) -> None:
    _, result, _, _ = measured
    costs = result.cpu_cost_s_per_sample
    assert set(costs) == {"small", "large", "fixed"}
    assert costs["large"] > costs["small"] > 0
    assert result.extra["cpu_cost_batch"]["fixed"] == 1
    assert result.serving_cost.source.startswith("default")
    assert result.serving_cost.call_s(8) == 0.0005
    assert result.extra["onnxruntime"]
    assert result.extra["session"]["cpu"]["intra_op_threads"] == 2
    assert result.extra["instance_overhead_bytes"]["cpu"] > 10_000_000


def test_profile_round_trips_through_profile_json(measured: Any, tmp_path: Path) -> None:
    _, result, _, _ = measured
    result.save(tmp_path / "profile.json")
    again = load_profile(tmp_path / "profile.json")
    assert again.to_json() == json.loads(json.dumps(result.to_json()))
    assert again.entries("large", "cpu")[4] == result.entries("large", "cpu")[4]


def test_second_run_reads_the_cache_without_starting_a_child(measured: Any) -> None:
    ensemble, first, cache, first_runner = measured
    assert first_runner.jobs == 6  # 3 members x (2 threads, 1 thread)
    runner, side = CountingRunner(), CountingTogether()
    second = profile(ensemble, cache, runner=runner, together_runner=side)
    assert runner.jobs == 0
    assert second.extra["measured_points"] == 0
    # Only what the first run could not measure (other processes held the cores) is tried again.
    missed = [w for w in first.warnings if "together" in w]
    assert side.runs == len(missed)
    for member, classes in first.members.items():
        for entry_class, entries in classes.items():
            for batch, entry in entries.items():
                again = second.members[member][entry_class][batch]
                curve, rest = _split_curve(again.extra)
                first_curve, first_rest = _split_curve(entry.extra)
                assert (again.throughput, again.memory_bytes, rest) == (
                    entry.throughput,
                    entry.memory_bytes,
                    first_rest,
                )
                assert first_curve.items() <= curve.items()
    assert second.cpu_cost_s_per_sample == first.cpu_cost_s_per_sample


def _split_curve(extra: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """An entry's k-instances curve, and the rest of its extra fields."""
    return extra.get("concurrency", {}), {k: v for k, v in extra.items() if k != "concurrency"}


@pytest.mark.slow
def test_no_cache_measures_again(models: dict[str, Path], tmp_path: Path) -> None:
    ensemble = ensemble_of(tmp_path, {"small": models["small"]}, max_batch_size=2)
    profile(ensemble, tmp_path / "cache")
    runner = CountingRunner()
    again = profile(ensemble, tmp_path / "cache", use_cache=False, runner=runner)
    assert runner.jobs == 2
    assert again.extra["measured_points"] == 4


def test_member_that_fails_at_some_batches_keeps_the_others(tmp_path: Path) -> None:
    ensemble = ensemble_of(tmp_path, {"even": even_batches_only(tmp_path / "even.onnx")}, 4)
    result = profile(ensemble, tmp_path / "cache")
    assert sorted(result.entries("even", "cpu")) == [2, 4]
    (skip,) = result.skipped
    assert skip["batch"] == 1
    assert skip["reason"].startswith("cannot run at batch 1:")


def test_member_onnxruntime_cannot_load_is_skipped_and_named(
    models: dict[str, Path], tmp_path: Path
) -> None:
    members = {"small": models["small"], "broken": unrunnable(tmp_path / "broken.onnx", 64, 10)}
    result = profile(ensemble_of(tmp_path, members, 2), tmp_path / "cache")
    assert sorted(result.entries("small", "cpu")) == [1, 2]
    assert result.members["broken"] == {}
    reasons = {s["reason"] for s in result.skipped if s["member"] == "broken"}
    assert len(reasons) == 1
    assert reasons.pop().startswith("cannot start an onnxruntime session:")
    with pytest.raises(ProfileError, match="member broken could not be measured"):
        require_measured(result, "profile.json")


def test_gpu_class_missing_here_is_skipped_not_guessed(
    models: dict[str, Path], tmp_path: Path
) -> None:
    gpu = Device(id="gpu0", kind="gpu", device_class="V100-16GB", memory_bytes=2**34, index=0)
    result = profile_ensemble(
        ensemble_of(tmp_path, {"small": models["small"]}, 1),
        Inventory((CPU, gpu)),
        budget_s=BUDGET_S,
        progress=False,
        cache_dir=tmp_path / "cache",
        local_gpus=[],
    )
    assert list(result.members["small"]) == ["cpu"]
    (skip,) = result.skipped
    assert skip == {
        "member": "small",
        "device_class": "V100-16GB",
        "batch": None,
        "reason": "no V100-16GB GPU on this machine; profile there and merge the files",
    }


def test_gpu_job_on_onnxruntime_without_cuda_fails_with_the_fix(
    models: dict[str, Path],
) -> None:
    job = Job(
        model_path=str(models["small"]),
        inputs=(InputFeed("x", "float32", (64,)),),
        batches=(1,),
        settings=session_settings("gpu", 1, gpu_index=0),
        kind="gpu",
        gpu_index=0,
    )
    messages: list[Message] = []
    run_job(job, messages.append, nvml=FakeNvml(device_used=[100], processes=[]))
    (failure,) = messages
    assert isinstance(failure, JobFailure)
    assert "CUDAExecutionProvider is not available" in failure.reason
    assert "onnxruntime-gpu" in failure.reason


# ------------------------------------------------------------------ the child process


def test_killed_child_fails_its_batch_and_larger_and_keeps_the_smaller() -> None:
    job = Job(
        "unused.onnx", (InputFeed("x", "float32", (4,)),), (1, 2, 8, 16), session_settings("cpu", 1)
    )
    messages: list[Message] = []
    run_in_child(job, messages.append, target=child_killed_at_batch_8)
    points = {m.batch for m in messages if isinstance(m, Point)}
    failures = {m.batch: m.reason for m in messages if isinstance(m, Failure)}
    assert points == {1, 2}
    assert set(failures) == {8, 16}
    assert "killed (SIGKILL), most likely out of memory at batch 8" in failures[16]


# ------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_cli_writes_profile_and_prints_the_table(models: dict[str, Path], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"small": models["small"]}, max_batch_size=4)
    out = tmp_path / "profile.json"
    done = run_cli(
        "profile", str(spec), "-o", str(out), "--batch-sizes", "1,2", "--budget-s", "1",
        cache=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Profile (one instance alone)" in done.stdout
    assert "serving cost (measured)" in done.stdout
    result = load_profile(out)
    assert sorted(result.entries("small", "cpu")) == [1, 2]
    assert result.serving_cost.source == "measured" and result.serving_cost.per_call_s > 0
    assert list((tmp_path / "tritongen" / "profile").glob("*.json"))
    assert list((tmp_path / "tritongen" / "serving_cost").glob("*.json"))


def test_cli_corrupt_model_is_one_line_and_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf\xff\xfe" * 10)
    spec = write_spec(tmp_path, {"corrupt": corrupt})
    done = run_cli("profile", str(spec), "-o", str(tmp_path / "p.json"), cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "corrupt.onnx is not a valid ONNX model" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_member_that_cannot_load_is_one_line_and_profile_keeps_the_rest(
    models: dict[str, Path], tmp_path: Path
) -> None:
    members = {"small": models["small"], "broken": unrunnable(tmp_path / "broken.onnx", 64, 10)}
    spec = write_spec(tmp_path, members, max_batch_size=1)
    out = tmp_path / "profile.json"
    done = run_cli("profile", str(spec), "-o", str(out), "--budget-s", "1", cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "error: member broken could not be measured on any device" in done.stderr
    here = detect_cpu().device_class
    assert f"skipped: broken on {here}, batch 1: cannot start an onnxruntime session" in done.stdout
    assert sorted(load_profile(out).entries("small", "cpu")) == [1]


def test_cli_bad_batch_sizes_is_one_line_and_exit_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"m": tmp_path / "m.onnx"})
    mlp(tmp_path / "m.onnx", [64, 8, 10])
    done = run_cli("profile", str(spec), "--batch-sizes", "1,two", cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --batch-sizes '1,two': expected integers like 1,2,4,8"


# ------------------------------------------------------------------ pure parts


def test_default_batch_sizes_are_powers_of_two_and_the_maximum() -> None:
    assert default_batch_sizes(1) == [1]
    assert default_batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert default_batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


def test_parse_batch_sizes_sorts_and_rejects_nonsense() -> None:
    assert parse_batch_sizes("8, 1,2,2") == [1, 2, 8]
    with pytest.raises(SpecError):
        parse_batch_sizes("0,1")


def test_budget_scales_the_time_per_point_down_not_up() -> None:
    assert point_seconds(None, 36) == 0.6
    assert point_seconds(1000, 36) == 0.6
    assert 0.02 < point_seconds(20, 36) < 0.6
    assert point_seconds(0.1, 36) == 0.02
    with pytest.raises(SpecError):
        point_seconds(0, 36)


def test_cpu_session_uses_the_device_cores_as_intra_op_threads() -> None:
    settings = session_settings("cpu", 16)
    assert settings.providers == ("CPUExecutionProvider",)
    assert settings.describe()["intra_op_threads"] == 16
    assert settings.describe()["execution_mode"] == "ORT_SEQUENTIAL"


def test_gpu_session_uses_cuda_on_its_ordinal_like_the_served_member() -> None:
    settings = session_settings("gpu", 8, gpu_index=3)
    (name, options), fallback = settings.providers
    assert (name, fallback) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert options == {"device_id": 3}
    assert settings.intra_op_threads == 1


def test_check_providers_refuses_a_silent_fallback_to_the_cpu() -> None:
    requested = session_settings("gpu", 1, 0).providers
    check_providers(requested, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        check_providers(requested, ["CPUExecutionProvider"])


class FakeNvml:
    """What GpuProcessMemory reads from pynvml: device memory in use, and per-process use."""

    def __init__(self, device_used: list[int], processes: list[SimpleNamespace]) -> None:
        self.device_used = device_used  # successive readings
        self.processes = processes

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        used = self.device_used.pop(0) if len(self.device_used) > 1 else self.device_used[0]
        return SimpleNamespace(used=used, total=2**34)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return self.processes


def test_gpu_memory_is_the_process_figure_when_nvml_lists_our_pid() -> None:
    nvml = FakeNvml(
        device_used=[1_000, 9_000_000],
        processes=[
            SimpleNamespace(pid=41, usedGpuMemory=123),
            SimpleNamespace(pid=42, usedGpuMemory=700_000_000),
        ],
    )
    assert GpuProcessMemory(nvml, index=0, pid=42).growth() == 700_000_000


def test_gpu_memory_falls_back_to_the_device_growth_when_our_pid_is_hidden() -> None:
    nvml = FakeNvml(device_used=[1_000_000, 501_000_000], processes=[])
    assert GpuProcessMemory(nvml, index=0, pid=42).growth() == 500_000_000


def test_cache_ignores_points_timed_shorter_than_asked(tmp_path: Path) -> None:
    cache = PointCache(tmp_path)
    key = PointKey("abc", "cpu", "1.0", batch=4, threads=2)
    cache.put(key, replace(fake_point(4, threads=2), point_s=0.1))
    assert cache.get(key, min_point_s=0.1) == replace(fake_point(4, threads=2), point_s=0.1)
    assert cache.get(key, min_point_s=0.6) is None
    assert cache.get(replace(key, threads=1), min_point_s=0.1) is None


def test_cache_treats_a_damaged_file_as_a_miss(tmp_path: Path) -> None:
    cache = PointCache(tmp_path)
    key = PointKey("abc", "cpu", "1.0", batch=4, threads=2)
    (tmp_path / key.filename).write_text("{not json")
    assert cache.get(key, min_point_s=0.0) is None


def test_cache_dir_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tritongen.profile.cache import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tritongen" / "profile"
