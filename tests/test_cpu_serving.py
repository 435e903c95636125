"""Members on a CPU are served by single-threaded instances, one per core of their share."""

from __future__ import annotations

import pytest

from tritongen.plan.cpu_serving import served_cpu_throughput, spread_on_cpus
from tritongen.plan.plan import Plan
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost
from tritongen.spec.devices import Device, Inventory

CPU = Inventory((Device("cpu", "cpu", "cpu", 8 * 2**30, cores=4),))


def _entry(one_thread_s: float, batch: int) -> ProfileEntry:
    # Four threads run 3x faster than one (sub-linear), as onnxruntime does on small models.
    return ProfileEntry(
        3 / one_thread_s, 10**8, {"cpu_cost_s_per_sample": one_thread_s * (1 + 1 / batch)}
    )


PROFILE = Profile(
    members={
        "cheap": {"cpu": {b: _entry(0.001, b) for b in (1, 4, 16)}},
        "dear": {"cpu": {b: _entry(0.003, b) for b in (1, 4, 16)}},
    },
    extra={"serving_cost": ServingCost(0.0005, 0.00001, 0.0002, "measured").to_json()},
)


def _plan() -> Plan:
    return Plan(
        allocation={"cheap": {"cpu": 1}, "dear": {"cpu": 1}},
        batch_size={"cheap": 16, "dear": 16},
        threads={"cheap": 4, "dear": 4},
    )


def test_each_member_gets_its_share_of_the_cores_in_one_thread_instances() -> None:
    spread = spread_on_cpus(_plan(), CPU, PROFILE)
    # dear needs 3/4 of the CPU time (3 cores), cheap 1/4 (1 core)
    # with the per-call overhead cheap needs a little over one core, dear a little under three
    assert spread.allocation == {"cheap": {"cpu": 2}, "dear": {"cpu": 3}}
    assert spread.threads == {"cheap": 1, "dear": 1}


def test_cpu_serving_model_charges_each_call_and_each_request() -> None:
    spread = spread_on_cpus(_plan(), CPU, PROFILE)
    compute = 0.001 * (1 + 1 / 16) + 0.003 * (1 + 1 / 16)
    calls = 2 * (0.0005 + 0.00001 * 16) / 16
    seconds = compute + calls + 0.0002
    assert served_cpu_throughput(spread, CPU, PROFILE) == pytest.approx(4 / seconds)
    assert spread.extra["cpu_serving_model"] == pytest.approx(4 / seconds)


def test_spread_keeps_the_plan_when_instances_would_not_fit() -> None:
    small = Inventory((Device("cpu", "cpu", "cpu", 3 * 10**8, cores=4),))
    assert spread_on_cpus(_plan(), small, PROFILE) == _plan()
