"""The MILP reference optimum agrees with exhaustive search (it is the benchmarks' "best")."""

from __future__ import annotations

import pytest

from tests.synthetic import exhaustive_best, random_problem_inputs
from tritongen.errors import PlanError
from tritongen.plan.optimum import best_placement
from tritongen.plan.problem import build_problem
from tritongen.plan.search import plan_from_candidate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [1, 2, 3, 5, 8])
def test_milp_optimum_equals_exhaustive_search_on_tiny_instances(seed: int) -> None:
    names, inventory, profile = random_problem_inputs(seed, members=3, devices=2)
    try:
        problem = build_problem(names, inventory, profile)
    except PlanError:
        pytest.skip("a member has no profiled class in this inventory")

    optimum = best_placement(problem, time_limit=30)

    assert optimum.proven
    assert optimum.throughput == pytest.approx(exhaustive_best(problem), rel=1e-6)
    assert optimum.candidate is not None and problem.fits(optimum.candidate)
    plan = plan_from_candidate(problem, optimum.candidate)
    assert plan.extra["base_lp_throughput"] == pytest.approx(optimum.throughput, rel=1e-6)
