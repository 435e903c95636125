"""The GPU side of the serving model, on synthetic profiles: instances on a GPU follow the
curve measured at each batch, within the GPU's memory, and a GPU's calls cost its host CPU."""

from __future__ import annotations

import pytest

from tests.synthetic import gpu
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile, ProfileEntry
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
