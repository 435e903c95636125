"""The serving model through searches that take seconds: no plan predicted above the hardware
bound, a dearer call predicted slower, a latency budget met by another plan or, when none
meets it, a plan error (the rest: unit/test_serving_model.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_serving_model import CALL_S, COSTS, cpu, cpu_profile
from tritongen.errors import PlanError
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan

pytestmark = pytest.mark.slow


def test_no_plan_is_predicted_above_the_hardware_bound() -> None:
    for call_s in (0.0, CALL_S, 0.005):
        profile = cpu_profile(COSTS, call_s=call_s)
        for shape in Shape:
            plan = make_plan(list(COSTS), cpu(), profile, shape=shape)
            assert plan.predicted_throughput <= plan.extra["bound"] * (1 + 1e-9)


def test_a_latency_budget_no_plan_meets_is_a_plan_error() -> None:
    with pytest.raises(
        PlanError, match=r"no plan of tiny, small, large meets a p99 latency of 0\.01 ms"
    ):
        make_plan(list(COSTS), cpu(), cpu_profile(COSTS), max_p99_ms=0.01)


def test_a_dearer_call_lowers_the_prediction() -> None:
    cheap = make_plan(list(COSTS), cpu(), cpu_profile(COSTS, call_s=0.0001))
    dear = make_plan(list(COSTS), cpu(), cpu_profile(COSTS, call_s=0.002))
    assert dear.predicted_throughput < cheap.predicted_throughput


def test_a_latency_budget_changes_the_plan_to_one_that_meets_it() -> None:
    profile = cpu_profile(COSTS)
    fastest = make_plan(list(COSTS), cpu(), profile)
    budget = fastest.extra["predicted_p99_ms"] / 2

    within = make_plan(list(COSTS), cpu(), profile, max_p99_ms=budget)

    assert within.extra["predicted_p99_ms"] <= budget
    assert within.extra["max_p99_ms"] == budget
    assert within.predicted_throughput <= fastest.predicted_throughput
    assert (within.allocation, within.groups) != (fastest.allocation, fastest.groups)
