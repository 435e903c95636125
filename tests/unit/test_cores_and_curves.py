"""Core counts a process may really use, and instance curves read at every measured k."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritongen.plan.plan import Plan
from tritongen.plan.problem import build_problem, concurrency_curve
from tritongen.plan.serving_model import predict_plan
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost
from tritongen.spec.cores import cgroup_cpu_quota, usable_cores
from tritongen.spec.devices import Device, Inventory

GIB = 2**30
# Total samples/s of k one-thread instances together on a 16-core CPU, measured at k = 1, 2,
# 4, 8, 16 as the profiler does: each instance slows down as more share the caches.
MEASURED = {1: 100.0, 2: 196.0, 4: 376.0, 8: 690.0, 16: 1150.0}


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def fake_cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_line + "\n")
    return root, proc


def test_a_cgroup_v2_quota_limits_the_cores(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "0::/box/job", {"box/job/cpu.max": "150000 100000\n"})

    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    assert usable_cores(root, proc) == 1


def test_a_quota_on_a_parent_cgroup_applies_to_its_children(tmp_path: Path) -> None:
    root, proc = fake_cgroup(
        tmp_path,
        "0::/box/job",
        {"box/cpu.max": "100000 100000\n", "box/job/cpu.max": "max 100000\n"},
    )

    assert usable_cores(root, proc) == 1


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "0::/", {"cpu.max": "max 100000\n"})

    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cores(root, proc) == affinity()


def test_a_cgroup_v1_cfs_quota_limits_the_cores(tmp_path: Path) -> None:
    root, proc = fake_cgroup(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )

    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.0)
    assert usable_cores(root, proc) == 1


def test_an_unlimited_v1_quota_is_no_limit(tmp_path: Path) -> None:
    root, proc = fake_cgroup(
        tmp_path,
        "2:cpu:/",
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )

    assert cgroup_cpu_quota(root, proc) is None


def test_the_instance_curve_keeps_every_measured_k() -> None:
    curve = concurrency_curve({str(k): x for k, x in MEASURED.items()})

    assert len(curve) == 16
    for k, x in MEASURED.items():
        assert curve[k - 1] == pytest.approx(x)
    assert MEASURED[8] < curve[11] < MEASURED[16]  # between the two measured around it


def test_sixteen_instances_on_sixteen_cores_are_predicted_at_the_measured_sixteen() -> None:
    # One member whose one-thread instance serves 100/s alone; the profile measured 16
    # instances together at 1150/s. Serving itself costs nothing here, so the plan of 16
    # one-thread instances must be predicted at what 16 were measured to serve, not at
    # 16 x the two-instance slowdown (1568/s).
    entry = ProfileEntry(
        800.0,
        GIB // 10,
        {
            "cpu_cost_s_per_sample": 1 / MEASURED[1],
            "concurrency": {str(k): x for k, x in MEASURED.items()},
        },
    )
    free = ServingCost(0.0, 0.0, 0.0, "measured")
    profile = Profile({"m": {"cpu": {1: entry}}}, {"serving_cost": free.to_json()})
    inventory = Inventory((Device("cpu", "cpu", "cpu", 64 * GIB, cores=16),))
    plan = Plan({"m": {"cpu": 16}}, {"m": 1}, threads={"m": 1})

    assert build_problem(["m"], inventory, profile).concurrent[0, 0, 0][15] == MEASURED[16]
    assert predict_plan(plan, inventory, profile).throughput == pytest.approx(
        MEASURED[16], rel=0.02
    )


def test_instances_are_priced_with_the_curve_of_the_batch_they_run_at() -> None:
    # At batch 1 a large member streams its weights from memory on every call, and two
    # instances share the bandwidth (0.6 each); at batch 16 they compute (0.98 each).
    entries = {
        1: ProfileEntry(
            150.0,
            GIB // 10,
            {"cpu_cost_s_per_sample": 1 / 100.0, "concurrency": {"1": 100.0, "2": 120.0}},
        ),
        16: ProfileEntry(
            1500.0,
            GIB // 10,
            {"cpu_cost_s_per_sample": 1 / 1000.0, "concurrency": {"1": 1000.0, "2": 1960.0}},
        ),
    }
    free = ServingCost(0.0, 0.0, 0.0, "measured")
    profile = Profile({"m": {"cpu": entries}}, {"serving_cost": free.to_json()})
    inventory = Inventory((Device("cpu", "cpu", "cpu", 64 * GIB, cores=2),))

    def served(batch: int) -> float:
        plan = Plan({"m": {"cpu": 2}}, {"m": batch}, threads={"m": 1}, dynamic_batching=batch > 1)
        return predict_plan(plan, inventory, profile).throughput

    assert served(1) == pytest.approx(120.0, rel=0.02)
    assert served(16) == pytest.approx(1960.0, rel=0.02)
