"""The planner's searches that take seconds: memory never exceeded, near the exhaustive best,
never below where they start, re-ranked by an injected evaluator, within the LP budget, a
latency budget met, and `tritongen plan` in process (the quick cases: unit/test_planner.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.synthetic import (
    GIB,
    IMAGENET,
    exhaustive_best,
    gpus,
    imagenet_profile,
    random_problem_inputs,
)
from tests.unit.test_planner import assert_valid, write_inputs
from tritongen.cli import app
from tritongen.errors import PlanError
from tritongen.plan.base_model import memory_used
from tritongen.plan.placement import best_batch, worst_fit
from tritongen.plan.problem import Candidate, Problem, build_problem
from tritongen.plan.search import CostModelEvaluator, greedy, make_plan
from tritongen.profile.profile import load_profile
from tritongen.spec.devices import load_inventory
from tritongen.spec.ensemble import load_spec

pytestmark = pytest.mark.slow


def test_twelve_imagenet_cnns_on_four_gpus_fit_and_beat_the_baseline() -> None:
    inventory, profile = gpus(4), imagenet_profile()
    nasnet_at_best = profile.entries("nasnet_large", "V100-16GB")[64].memory_bytes
    smallest_other = min(
        profile.entries(m, "V100-16GB")[1].memory_bytes for m in IMAGENET if m != "nasnet_large"
    )
    assert nasnet_at_best + smallest_other > 16 * GIB  # cannot share a GPU at its best batch

    plan = make_plan(list(IMAGENET), inventory, profile)

    assert_valid(plan, inventory, profile)
    assert plan.predicted_throughput >= 1.2 * plan.extra["baseline"]
    assert plan.predicted_throughput >= 0.85 * plan.extra["bound"]
    assert plan.extra["bottleneck"] in IMAGENET
    not_everywhere = [m for m, per_device in plan.allocation.items() if len(per_device) < 4]
    assert not_everywhere


def test_plans_never_exceed_device_memory_on_random_inventories() -> None:
    planned = 0
    for seed in range(12):
        names, inventory, profile = random_problem_inputs(seed, members=4, devices=3)
        try:
            plan = make_plan(names, inventory, profile)
        except PlanError:
            continue  # a member that fits nowhere (or no profiled class): the error is the plan
        planned += 1
        assert_valid(plan, inventory, profile)
        used = memory_used(plan.allocation, plan.batch_size, inventory, profile)
        assert all(used[d.id] <= d.memory_bytes for d in inventory.devices)
    assert planned >= 6  # most random inventories can hold their members


def test_greedy_reaches_95_percent_of_exhaustive_best_on_small_instances() -> None:
    ratios = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        members, devices = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        names, inventory, profile = random_problem_inputs(seed, members, devices, (1, 16))
        try:
            plan = make_plan(names, inventory, profile, evaluator=CostModelEvaluator)
        except PlanError:
            continue
        best = exhaustive_best(build_problem(names, inventory, profile))
        ratios.append(plan.extra["base_lp_throughput"] / best)
    assert len(ratios) >= 8
    assert min(ratios) >= 0.95, ratios
    assert max(ratios) <= 1 + 1e-6  # nothing beats exhaustive search: the LP agrees


def test_twelve_members_on_sixteen_gpus_stay_within_the_lp_budget() -> None:
    plan = make_plan(list(IMAGENET), gpus(16), imagenet_profile())

    assert_valid(plan, gpus(16), imagenet_profile())
    assert plan.extra["search"]["evaluations"] <= 800
    assert plan.predicted_throughput >= 0.9 * plan.extra["bound"]


def test_the_specs_slo_is_the_latency_budget_and_plan_json_records_it(tmp_path: Path) -> None:
    spec, devices, profile = write_inputs(tmp_path)
    fastest = make_plan(load_spec(spec), load_inventory(devices), load_profile(profile))
    budget = round(fastest.extra["predicted_p99_ms"] / 3, 3)
    spec.write_text(spec.read_text() + f"slo:\n  p99_ms: {budget}\n")

    plan = make_plan(load_spec(spec), load_inventory(devices), load_profile(profile))

    assert plan.extra["max_p99_ms"] == budget
    assert plan.extra["predicted_p99_ms"] <= budget
    assert plan.predicted_throughput < fastest.predicted_throughput


def test_greedy_never_lowers_the_starting_throughput() -> None:
    problem = build_problem(list(IMAGENET), gpus(4), imagenet_profile())
    start = worst_fit(problem, best_batch(problem))
    model = CostModelEvaluator(problem)

    result = greedy(problem, start, model)

    assert result.throughput >= model.evaluate(start)
    assert problem.fits(result.best)


class FewestInstances:
    """A stand-in for the measured evaluator: prefers plans with fewer instances."""

    def __init__(self, problem: Problem) -> None:
        self.seen: list[Candidate] = []

    def evaluate(self, candidate: Candidate) -> float:
        self.seen.append(candidate)
        return -float(np.sum(candidate.counts))


def test_refine_re_ranks_the_best_candidates_with_an_injected_evaluator() -> None:
    refiners: list[FewestInstances] = []

    def factory(problem: Problem) -> FewestInstances:
        refiners.append(FewestInstances(problem))
        return refiners[-1]

    plan = make_plan(list(IMAGENET), gpus(4), imagenet_profile(), refine_with=factory, refine_top=3)

    (refiner,) = refiners
    assert len(refiner.seen) == 3
    assert plan.extra["refined_candidates"] == 3
    assert plan.extra["refined_throughput"] == max(-np.sum(c.counts) for c in refiner.seen)


def test_cli_plan_writes_plan_json_from_devices_and_profile_files(tmp_path: Path) -> None:
    spec, devices, profile = write_inputs(tmp_path)
    output = tmp_path / "plan.json"

    args = ["plan", str(spec), "--devices", str(devices), "--profile", str(profile)]

    result = CliRunner().invoke(app, [*args, "-o", str(output)], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    data = json.loads(output.read_text())
    assert set(data["allocation"]) == {"resnet50", "vgg16"}
    assert data["predicted_throughput"] > 0
    for shown in ("Allocation", "gpu0", "gpu1", "batch size", "predicted throughput"):
        assert shown in result.output
    assert "one instance per member" in result.output and "bottleneck" in result.output
