"""The profiler's pure parts, in this process: batch sizes, budgets, session settings,
providers, GPU memory figures and the point cache (real child processes:
integration/test_profile.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.onnx_models import (
    fake_point,
    mlp,
)
from tritongen.errors import SpecError
from tritongen.profile.busy import Work
from tritongen.profile.cache import PointCache, PointKey
from tritongen.profile.profiler import (
    default_batch_sizes,
    parse_batch_sizes,
    point_seconds,
)
from tritongen.profile.runtime import check_providers, session_settings
from tritongen.profile.worker import (
    GpuProcessMemory,
    InputFeed,
    Job,
    JobFailure,
    Message,
    Point,
    run_job,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "small": mlp(folder / "small.onnx", [64, 16, 10]),
        "large": mlp(folder / "large.onnx", [64, 1536, 1536, 10], seed=1),
        "fixed": mlp(folder / "fixed.onnx", [64, 32, 10], batch=1, seed=2),
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


def test_a_cpu_job_times_batch_one_as_a_lone_request_meets_it(models: dict[str, Path]) -> None:
    # Each lone call comes after the process slept and its core's cache was written over:
    # it cannot be faster than the hot loop's calls by more than timing noise, and only
    # batch 1 (a lone request's) gets one.
    job = Job(
        model_path=str(models["large"]),
        inputs=(InputFeed("x", "float32", (64,)),),
        batches=(1, 4),
        settings=session_settings("cpu", 1),
        point_s=0.15,
        lone_gap_s=0.001,
    )
    messages: list[Message] = []
    run_job(job, messages.append)
    points = {m.batch: m for m in messages if isinstance(m, Point)}

    assert points[4].lone_latency_s is None
    lone = points[1].lone_latency_s
    assert lone is not None and lone > 0.8 * points[1].latency_s


def test_the_members_extra_cpu_beside_the_path_is_counted_per_member_run() -> None:
    alone = Work(runs=(10, 4, 0), cpu_s=(1.0, 2.0, 0.0))  # 0.1 s and 0.5 s a run alone
    beside = Work(runs=(6, 2, 3), cpu_s=(0.9, 1.1, 5.0))  # the third ran only beside: left out
    assert beside.extra_cpu_s(alone) == pytest.approx((0.9 - 0.6) + (1.1 - 1.0))
    assert Work((12, 5, 3), (2.0, 3.0, 1.0)).minus(alone) == Work((2, 1, 3), (1.0, 1.0, 1.0))
