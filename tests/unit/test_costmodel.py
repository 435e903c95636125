"""The base planning model: the time-sharing LP, its bottleneck, bounds and memory checks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import GIB, cpu, gpu, gpus, imagenet_profile
from tritongen.errors import PlanError
from tritongen.plan.base_model import (
    base_solution,
    base_throughput,
    dual_bound,
    fits,
    memory_used,
    solve_time_sharing,
    upper_bound,
)
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Inventory


def test_throughput_is_harmonic_share_when_every_member_is_on_every_device() -> None:
    speeds = np.array([100.0, 200.0, 400.0])
    rates = np.repeat(speeds[:, None], 4, axis=1)

    solution = solve_time_sharing(rates)

    assert solution.throughput == pytest.approx(4 / np.sum(1 / speeds))
    assert solution.fractions.sum(axis=0) == pytest.approx(np.ones(4))


def test_bottleneck_is_the_member_that_limits_throughput() -> None:
    rates = np.array([[100.0, 0.0], [0.0, 500.0]])  # each member alone on its own device

    solution = solve_time_sharing(rates)

    assert solution.throughput == pytest.approx(100.0)
    assert solution.bottleneck == 0


def test_member_without_instance_gives_zero_throughput_and_is_the_bottleneck() -> None:
    solution = solve_time_sharing(np.array([[100.0, 50.0], [0.0, 0.0]]))

    assert solution.throughput == 0.0
    assert solution.bottleneck == 1


def test_dual_bound_never_falls_below_the_lp_value() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        rates = rng.uniform(10, 1000, (4, 3)) * (rng.random((4, 3)) < 0.7)
        rates[np.arange(4), rng.integers(0, 3, 4)] = rng.uniform(10, 1000, 4)
        prices = rng.dirichlet(np.ones(4), size=3)

        assert dual_bound(rates, prices) >= solve_time_sharing(rates).throughput - 1e-6


def test_base_throughput_reads_plan_json_style_allocations() -> None:
    inventory = gpus(2)
    profile = imagenet_profile(["resnet50", "vgg16"])
    allocation = {"resnet50": {"gpu0": 2}, "vgg16": {"gpu0": 1, "gpu1": 1}}
    batch = {"resnet50": 32, "vgg16": 64}

    throughput, bottleneck = base_solution(allocation, batch, inventory, profile)

    r50 = profile.entries("resnet50", "V100-16GB")[32].throughput
    vgg = profile.entries("vgg16", "V100-16GB")[64].throughput
    # resnet50 needs X/r50 of gpu0; vgg16 gets the rest of gpu0 and all of gpu1.
    expected = 2 / (1 / r50 + 1 / vgg)
    assert throughput == pytest.approx(min(expected, r50))
    assert bottleneck in allocation


def test_memory_counts_every_instance_at_its_batch_size() -> None:
    inventory = gpus(1)
    profile = imagenet_profile(["resnet50"])
    per_instance = profile.entries("resnet50", "V100-16GB")[8].memory_bytes

    used = memory_used({"resnet50": {"gpu0": 3}}, {"resnet50": 8}, inventory, profile)

    assert used == {"gpu0": 3 * per_instance}
    assert fits({"resnet50": {"gpu0": 3}}, {"resnet50": 8}, inventory, profile)
    assert not fits({"resnet50": {"gpu0": 4}}, {"resnet50": 64}, inventory, profile)


def test_base_throughput_rejects_a_batch_size_the_profile_lacks() -> None:
    with pytest.raises(PlanError, match="no entry for class 'V100-16GB' at batch size 3"):
        base_throughput(
            {"resnet50": {"gpu0": 1}}, {"resnet50": 3}, gpus(1), imagenet_profile(["resnet50"])
        )


def test_upper_bound_ignores_memory_and_lets_members_use_every_profiled_device() -> None:
    inventory = Inventory((gpu(0), cpu(cores=8)))
    profile = Profile(
        {
            "a": {"V100-16GB": {1: ProfileEntry(300.0, 40 * GIB)}},
            "b": {"cpu": {1: ProfileEntry(100.0, GIB)}},
        }
    )

    assert upper_bound(["a", "b"], inventory, profile) == pytest.approx(100.0)
