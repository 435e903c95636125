"""The planner on synthetic inventories: no hardware, no model file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.synthetic import (
    GIB,
    cpu,
    gpu,
    gpus,
    imagenet_profile,
)
from tritongen.errors import PlanError
from tritongen.plan.base_model import base_solution, fits
from tritongen.plan.placement import best_batch, worst_fit
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, build_problem
from tritongen.plan.search import CostModelEvaluator, make_plan
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Inventory


def entry(throughput: float, gib: float) -> ProfileEntry:
    return ProfileEntry(throughput, int(gib * GIB))


def assert_valid(plan: Plan, inventory: Inventory, profile: Profile) -> None:
    """Memory is never exceeded, plan.json's base-model figure is what an outside check
    recomputes from its allocation, and no prediction exceeds the bound."""
    assert fits(plan.allocation, plan.batch_size, inventory, profile)
    recomputed, _ = base_solution(plan.allocation, plan.batch_size, inventory, profile)
    assert plan.extra["base_lp_throughput"] == pytest.approx(recomputed, rel=1e-6)
    assert plan.predicted_throughput <= plan.extra["bound"] * (1 + 1e-9)
    assert all(sum(per_device.values()) >= 1 for per_device in plan.allocation.values())


# ----------------------------------------------------------------------------- worst-fit


def test_worst_fit_places_largest_member_first_on_the_emptiest_device() -> None:
    inventory = Inventory((gpu(0, gb=10), gpu(1, gb=16)))
    profile = Profile(
        {
            "small": {"V100-16GB": {1: entry(100, 2)}},
            "large": {"V100-16GB": {1: entry(100, 9)}},
        }
    )
    problem = build_problem(["small", "large"], inventory, profile)

    start = worst_fit(problem, best_batch(problem))

    # large goes first onto the 16 GB device; small then onto the 10 GB one (10 > 16 - 9).
    assert start.counts == ((1, 0), (0, 1))


def test_worst_fit_falls_back_to_smaller_batch_sizes_when_the_best_ones_do_not_fit() -> None:
    profile = Profile(
        {name: {"V100-16GB": {1: entry(100, 2), 32: entry(900, 10)}} for name in ("a", "b", "c")}
    )
    problem = build_problem(["a", "b", "c"], gpus(1), profile)

    start = worst_fit(problem, best_batch(problem))

    # Only one member fits at batch 32 (10 GiB); the others fall back to batch 1 (2 GiB).
    assert problem.fits(start)
    assert sorted(problem.batch_sizes[b] for b in start.batch) == [1, 1, 32]


def test_worst_fit_raises_when_member_exceeds_every_device() -> None:
    inventory = Inventory((gpu(0, gb=16), gpu(1, gb=24)))
    profile = imagenet_profile(["resnet50"])
    profile.members["giant"] = {"V100-16GB": {1: entry(50, 30), 8: entry(200, 40)}}

    with pytest.raises(PlanError) as error:
        make_plan(["resnet50", "giant"], inventory, profile)

    message = str(error.value)
    assert message.startswith("giant: needs at least 30.0 GiB")
    assert "gpu1, has 24.0 GiB free" in message
    assert "\n" not in message


def test_make_plan_rejects_a_member_missing_from_the_profile() -> None:
    with pytest.raises(PlanError, match="ghost: not in the profile"):
        make_plan(["resnet50", "ghost"], gpus(1), imagenet_profile(["resnet50"]))


# ----------------------------------------------------------------------------- scenarios


def test_one_dnn_over_sixteen_gpus_uses_all_sixteen() -> None:
    inventory, profile = gpus(16), imagenet_profile(["resnet152"])

    plan = make_plan(["resnet152"], inventory, profile)

    assert_valid(plan, inventory, profile)
    assert set(plan.allocation["resnet152"]) == {f"gpu{i}" for i in range(16)}
    best = max(e.throughput for e in profile.entries("resnet152", "V100-16GB").values())
    assert plan.predicted_throughput == pytest.approx(16 * best)
    assert plan.extra["baseline"] == pytest.approx(best)


def test_cpu_and_gpu_mix_places_members_only_on_profiled_classes() -> None:
    inventory = Inventory((gpu(0, gb=16), cpu(cores=16, gb=64)))
    profile = Profile(
        {
            "gpu_only": {"V100-16GB": {1: entry(200, 2), 16: entry(1500, 6)}},
            "cpu_only": {"cpu": {1: entry(40, 1), 16: entry(120, 2)}},
            "both": {
                "V100-16GB": {1: entry(300, 2), 16: entry(2000, 5)},
                "cpu": {1: entry(50, 1), 16: entry(150, 2)},
            },
        }
    )

    plan = make_plan(["gpu_only", "cpu_only", "both"], inventory, profile)

    assert_valid(plan, inventory, profile)
    assert set(plan.allocation["gpu_only"]) == {"gpu0"}
    assert set(plan.allocation["cpu_only"]) == {"cpu"}
    assert plan.extra["base_lp_throughput"] == pytest.approx(120.0)  # cpu_only alone on the CPU
    assert plan.extra["bottleneck"] == "cpu_only"
    assert 1 <= plan.threads["cpu_only"] <= 16
    assert "gpu_only" not in plan.threads


def test_cpu_time_goes_to_the_member_that_needs_it_when_gpu_memory_is_short() -> None:
    inventory = Inventory((gpu(0, gb=8), cpu(cores=8, gb=64)))
    profile = Profile(
        {
            "a": {"V100-16GB": {8: entry(800, 5)}, "cpu": {8: entry(100, 5)}},
            "b": {"V100-16GB": {8: entry(800, 5)}, "cpu": {8: entry(100, 5)}},
        }
    )

    plan = make_plan(["a", "b"], inventory, profile)

    assert_valid(plan, inventory, profile)
    # Only one member fits the GPU; the other must live on the CPU, so X = 100 at best.
    assert plan.extra["base_lp_throughput"] == pytest.approx(100.0)


# ----------------------------------------------------------------------------- search


def test_search_takes_an_injected_evaluator_in_place_of_the_cost_model() -> None:
    calls = []

    class Counting(CostModelEvaluator):
        placement_only = False  # also sees instance counts and threads

        def evaluate(self, candidate: Candidate) -> float:
            calls.append(candidate)
            return super().evaluate(candidate)

    inventory = Inventory((gpu(0), cpu(cores=4)))
    profile = Profile({"a": {"V100-16GB": {8: entry(500, 2)}, "cpu": {8: entry(100, 1)}}})

    plan = make_plan(["a"], inventory, profile, evaluator=Counting)

    assert calls
    assert plan.extra["evaluator_throughput"] == pytest.approx(600.0)


# ----------------------------------------------------------------------------- plan.json


def test_plan_json_carries_design_keys_and_round_trips(tmp_path: Path) -> None:
    inventory, profile = gpus(2), imagenet_profile(["resnet50", "vgg16"])
    plan = make_plan(["resnet50", "vgg16"], inventory, profile)

    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())

    assert {"allocation", "batch_size", "predicted_throughput"} <= set(data)
    assert {"bottleneck", "baseline", "bound"} <= set(data)
    assert Plan.from_json(data).allocation == plan.allocation


# ----------------------------------------------------------------------------- CLI


def write_inputs(tmp_path: Path, giant: bool = False) -> tuple[Path, Path, Path]:
    """A spec whose model files do not exist (planning must not open them)."""
    names = ["resnet50", "vgg16"] + (["giant"] if giant else [])
    spec = tmp_path / "ensemble.yaml"
    spec.write_text(
        "name: cnns\nmembers:\n"
        + "".join(f"  - name: {n}\n    model: missing/{n}.onnx\n" for n in names)
    )
    devices = tmp_path / "DEVICES.json"
    Inventory((gpu(0), gpu(1), cpu(cores=8))).save(devices)
    profile = imagenet_profile(["resnet50", "vgg16"])
    if giant:
        profile.members["giant"] = {"V100-16GB": {1: entry(10, 99)}}
    profile_path = tmp_path / "profile.json"
    profile.save(profile_path)
    return spec, devices, profile_path
