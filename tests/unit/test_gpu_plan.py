"""The GPU side of the serving model, on synthetic profiles: instances on a GPU follow the
curve measured at each batch, within the GPU's memory, and a GPU's calls cost its host CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.synthetic import gpu
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan
from tritongen.plan.serving_model import predict_plan
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost
from tritongen.spec.devices import Device, Inventory

GIB = 2**30


def _entry(one: float, two: float, memory_gib: float = 1.0, host_s: float = 0.0) -> ProfileEntry:
    extra = {"concurrency": {"1": one, "2": two}, "host_cpu_s_per_sample": host_s}
    return ProfileEntry(one, int(memory_gib * GIB), extra)


def test_a_second_instance_is_chosen_at_the_batch_where_the_curve_pays() -> None:
    # Alone, batch 8 is the faster; two instances together double batch 1 and add nothing at
    # batch 8: the best plan is two instances at batch 1, which one curve for every batch hides.
    profile = Profile({"net": {"V100-16GB": {1: _entry(500.0, 1000.0), 8: _entry(700.0, 700.0)}}})
    plan = make_plan(["net"], Inventory((gpu(0),)), profile)

    assert plan.allocation["net"] == {"gpu0": 2}
    assert plan.batch_size["net"] == 1
    assert plan.predicted_throughput == pytest.approx(1000.0, rel=1e-6)


def test_a_second_instance_that_does_not_fit_the_gpu_is_not_chosen() -> None:
    big = {1: _entry(500.0, 1000.0, memory_gib=10.0), 8: _entry(700.0, 700.0, memory_gib=10.0)}
    plan = make_plan(["net"], Inventory((gpu(0),)), Profile({"net": {"V100-16GB": big}}))

    assert plan.allocation["net"] == {"gpu0": 1}
    assert plan.batch_size["net"] == 8


def test_the_host_cpu_a_gpu_call_takes_bounds_the_prediction() -> None:
    # The GPU alone would serve 5,000 samples/s; each sample takes 1 ms of the host's one core.
    def profile(host_s: float) -> Profile:
        entries = {8: ProfileEntry(5000.0, GIB, {"host_cpu_s_per_sample": host_s})}
        return Profile({"net": {"V100-16GB": entries}})

    inventory = Inventory((gpu(0), Device("cpu", "cpu", "cpu", 8 * GIB, cores=1)))
    free = make_plan(["net"], inventory, profile(0.0))
    dear = make_plan(["net"], inventory, profile(0.001))

    assert free.predicted_throughput > 1000.0
    assert dear.predicted_throughput <= 1000.0


def _with_stub(profile: Profile, per_call_s: float, per_request_s: float) -> Profile:
    cost = ServingCost(per_call_s, 0.0, 0.0, "measured", stub_request_s=per_request_s)
    return Profile(profile.members, extra={"serving_cost": cost.to_json()})


def test_an_instance_serves_no_faster_than_its_process_takes_requests_in() -> None:
    # The GPU does 50,000 samples/s at batch 16 with one instance or two; the Python-backend
    # process around each instance takes 0.2 ms per request in and out, one call at a time:
    # one instance serves under 5,000/s, and a second process doubles that though the GPU's
    # curve is flat.
    flat = Profile({"net": {"V100-16GB": {16: _entry(50000.0, 50000.0)}}})
    inventory = Inventory((gpu(0), Device("cpu", "cpu", "cpu", 8 * GIB, cores=16)))
    free = make_plan(["net"], inventory, flat)
    dear = make_plan(["net"], inventory, _with_stub(flat, 0.0001, 0.0002))

    assert free.allocation["net"] == {"gpu0": 1}
    assert free.predicted_throughput == pytest.approx(50000.0, rel=1e-6)
    assert sum(dear.allocation["net"].values()) >= 2
    one = predict_plan(
        replace(dear, allocation={"net": {"gpu0": 1}}), inventory, _with_stub(flat, 1e-4, 2e-4)
    )
    assert one.throughput < 5000.0
    assert dear.predicted_throughput > 1.8 * one.throughput


def test_a_fast_plan_gets_combine_step_instances_enough_for_its_rate() -> None:
    flat = Profile({"net": {"V100-16GB": {16: _entry(50000.0, 50000.0)}}})
    inventory = Inventory((gpu(0), Device("cpu", "cpu", "cpu", 8 * GIB, cores=16)))
    plan = make_plan(["net"], inventory, _with_stub(flat, 0.0001, 0.0))

    # each combine-step call of one request costs 0.1 ms (and its one member's tensor nothing):
    # 10,000 requests/s per instance
    assert plan.predicted_throughput > 10000.0
    assert plan.combine_instances * 10000.0 >= plan.predicted_throughput
    assert (plan.combine_instances - 1) * 10000.0 < plan.predicted_throughput
    assert Plan.from_json(plan.to_json()).combine_instances == plan.combine_instances


def test_two_members_processes_wait_on_the_host_side_by_side_not_in_turn() -> None:
    # Two members on one GPU, each 50,000 samples/s with the GPU to itself, each behind one
    # process that takes 0.2 ms per request: the processes' host time is their own, so the
    # ensemble passes what one process passes (under 5,000/s), not half of it.
    entry = {16: _entry(50000.0, 50000.0)}
    profile = _with_stub(
        Profile({"a": {"V100-16GB": entry}, "b": {"V100-16GB": entry}}), 1e-4, 2e-4
    )
    inventory = Inventory((gpu(0), Device("cpu", "cpu", "cpu", 8 * GIB, cores=16)))
    alone = predict_plan(Plan({"a": {"gpu0": 1}}, {"a": 16}), inventory, profile).throughput
    both = Plan({"a": {"gpu0": 1}, "b": {"gpu0": 1}}, {"a": 16, "b": 16})

    assert alone < 5000.0
    assert predict_plan(both, inventory, profile).throughput == pytest.approx(alone, rel=0.1)
