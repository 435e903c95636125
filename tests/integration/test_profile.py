"""The profiler: real onnxruntime sessions in real child processes, on tiny ONNX models built
here. Budgets are small, so figures are coarse; the tests check what must hold anyway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import process_alive, run_cli, wait_until
from tests.onnx_models import (
    child_killed_at_batch_8,
    even_batches_only,
    mlp,
    unrunnable,
    write_spec,
)
from tests.unit import test_profile_parts as unit_half
from tritongen.errors import ProfileError
from tritongen.profile.children import run_in_child
from tritongen.profile.concurrency import instances_together
from tritongen.profile.profile import Profile, load_profile
from tritongen.profile.profiler import (
    profile_ensemble,
    require_measured,
)
from tritongen.profile.runtime import session_settings
from tritongen.profile.worker import (
    ConcurrencyPoint,
    Failure,
    InputFeed,
    Job,
    Message,
    Point,
)
from tritongen.spec.devices import Device, Inventory, detect_cpu
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

models = unit_half.models  # a fixture the unit half of this file shares

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]
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

    def __call__(
        self, job: Job, batches: Sequence[int], instances: int
    ) -> dict[int, ConcurrencyPoint]:
        self.runs += 1
        return instances_together(job, batches, instances)


def ensemble_of(folder: Path, members: dict[str, Path], max_batch_size: int = 8) -> Ensemble:
    return load_ensemble(load_spec(write_spec(folder, members, max_batch_size)))


def profile(ensemble: Ensemble, cache: Path, **options: Any) -> Profile:
    options = {"budget_s": BUDGET_S, "progress": False, "cache_dir": cache, **options}
    return profile_ensemble(ensemble, Inventory((CPU,)), **options)


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
        # a lone request's call, at each thread count, where a lone request has one sample
        assert set(entries[1].extra["lone_latency_s_by_threads"]) == {"1", "2"}
        assert all("lone_latency_s_by_threads" not in entries[b].extra for b in (2, 4, 8))
        # and its call when it runs after the other member in one process, as in a group;
        # back to back at the largest batch, its CPU per sample there
        assert entries[1].extra["lone_latency_s_in_group"] > 0
        assert entries[8].extra["cpu_cost_s_per_sample_in_group"] > 0
        assert all("cpu_cost_s_per_sample_in_group" not in entries[b].extra for b in (1, 2, 4))


def test_a_busy_groups_cost_per_sample_is_near_the_hot_loops_for_a_member_its_weights_rule(
    measured: Any,
) -> None:
    # per sample, not per call (8 samples a call would be ~8x): the larger member's weights
    # outweigh the other's, so the caches it loses in a group cost it little. The small
    # member's sub-microsecond samples are not compared: a call's fixed cost and a busy
    # machine move its figure several times over from run to run.
    _, result, _, _ = measured
    largest = result.entries("large", "cpu")[8].extra
    assert 0.5 < largest["cpu_cost_s_per_sample_in_group"] / largest["cpu_cost_s_per_sample"] < 3


def test_a_lone_call_in_a_group_is_slower_for_the_larger_member(measured: Any) -> None:
    _, result, _, _ = measured
    small, large = (result.entries(m, "cpu")[1].extra for m in ("small", "large"))
    assert large["lone_latency_s_in_group"] > small["lone_latency_s_in_group"]


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
    assert result.serving_cost.source.startswith("not charged")  # nothing measured: no stand-in
    assert result.serving_cost.call_s(8) == 0.0
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


# A profile killed outright (a test's timeout, the OOM killer) while the members are kept busy
# in the background: prints the workers' pids, then waits to be killed.
BUSY_THEN_WAIT = """
import multiprocessing, sys, time
from tritongen.profile.busy import busy_jobs, members_busy
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble
ensemble = load_ensemble(load_spec(sys.argv[1]))
with members_busy(busy_jobs(ensemble, 4), 2):
    print(*[child.pid for child in multiprocessing.active_children()], flush=True)
    time.sleep(600)
"""


def test_busy_members_end_with_a_profile_killed_outright(
    models: dict[str, Path], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, models, 8)
    command = [sys.executable, "-c", BUSY_THEN_WAIT, str(spec)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as parent:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(process_alive(pid) for pid in workers)
        parent.kill()  # SIGKILL: no finally block of the parent runs
    try:
        wait_until(lambda: not any(process_alive(pid) for pid in workers), 30)
    finally:
        for pid in filter(process_alive, workers):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache the profile command's runs below share: the serving cost of their one input
    shape and largest batch (about a minute of perf_analyzer on an embedded tritonserver) is
    measured by the first of them only."""
    return tmp_path_factory.mktemp("cli_cache")


@pytest.mark.server  # the serving cost is measured on an embedded tritonserver
@pytest.mark.slow
def test_cli_writes_profile_and_prints_the_table(
    models: dict[str, Path], tmp_path: Path, cli_cache: Path
) -> None:
    spec = write_spec(tmp_path, {"small": models["small"]}, max_batch_size=4)
    out = tmp_path / "profile.json"
    done = run_cli(
        "profile", str(spec), "-o", str(out), "--batch-sizes", "1,2", "--budget-s", "1",
        cache=cli_cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Profile (one instance alone)" in done.stdout
    assert "serving cost (measured)" in done.stdout
    result = load_profile(out)
    assert sorted(result.entries("small", "cpu")) == [1, 2]
    assert result.serving_cost.source == "measured" and result.serving_cost.per_call_s > 0
    assert list((cli_cache / "tritongen" / "profile").glob("*.json"))
    assert list((cli_cache / "tritongen" / "serving_cost").glob("*.json"))


def test_cli_corrupt_model_is_one_line_and_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf\xff\xfe" * 10)
    spec = write_spec(tmp_path, {"corrupt": corrupt})
    done = run_cli("profile", str(spec), "-o", str(tmp_path / "p.json"), cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "corrupt.onnx is not a valid ONNX model" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.server  # the serving cost is measured on an embedded tritonserver
def test_cli_member_that_cannot_load_is_one_line_and_profile_keeps_the_rest(
    models: dict[str, Path], tmp_path: Path, cli_cache: Path
) -> None:
    members = {"small": models["small"], "broken": unrunnable(tmp_path / "broken.onnx", 64, 10)}
    spec = write_spec(tmp_path, members, max_batch_size=4)
    out = tmp_path / "profile.json"
    done = run_cli(
        "profile", str(spec), "-o", str(out), "--batch-sizes", "1", "--budget-s", "1",
        cache=cli_cache,
    )  # fmt: skip
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
