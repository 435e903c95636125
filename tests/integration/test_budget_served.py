"""A p99 budget checked by serving the plan (`bench.budget`), on the embedded server with
perf_analyzer; the planner is stood in for by a fixed plan, so what is tested is the check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit import test_bench_units as unit_half
from tritongen.bench.budget import plan_checked
from tritongen.errors import PlanError
from tritongen.plan.plan import Plan
from tritongen.spec.devices import detect_devices
from tritongen.spec.members import Ensemble

ensemble = unit_half.ensemble  # a fixture the unit half of the bench tests shares

pytestmark = pytest.mark.server


def _planner(ensemble: Ensemble, batches: list[int]) -> tuple[list[float], Callable[[float], Plan]]:
    """A stand-in planner: its i-th plan serves batches of `batches[i]`, predicted at 2 in
    flight, whatever the budget; a PlanError (nothing predicted within) once they run out."""
    asked: list[float] = []

    def plan_under(budget_ms: float) -> Plan:
        if len(asked) == len(batches):
            raise PlanError(f"no plan meets a p99 latency of {budget_ms:g} ms")
        batch = batches[len(asked)]
        asked.append(budget_ms)
        return Plan(
            allocation={m.name: {"cpu": 1} for m in ensemble.members},
            batch_size={m.name: batch for m in ensemble.members},
            threads={m.name: 1 for m in ensemble.members},
            extra={
                "predicted_concurrency_local_client": 2,
                "predicted_p99_ms_local_client": 5.0,
                "max_p99_ms": budget_ms,
            },
        )

    return asked, plan_under


def test_a_plan_served_over_its_budget_is_planned_again_under_a_tighter_one(
    ensemble: Ensemble, tmp_path: Path
) -> None:
    # no served request takes a microsecond: every check misses, and each asks the planner
    # for a budget tighter by the budget over what was served; the first planner's second
    # plan is its first again, which is not served twice, then it has nothing within; the
    # next planner (another shape, in the pipeline) is asked from the budget itself
    first_asked, first = _planner(ensemble, [4, 4])
    next_asked, then = _planner(ensemble, [2])
    plan = plan_checked([first, then], ensemble, detect_devices(), 0.001, tmp_path)

    served_4, served_2 = plan.extra["budget_checks"]
    ratio = 0.001 / served_4["served_p99_ms"]
    assert first_asked == [0.001, pytest.approx(0.001 * ratio)]
    assert next_asked == [0.001] and served_2["planned_ms"] == 0.001
    assert all(c["concurrency"] == 2 and c["served_p99_ms"] > 0.001 for c in (served_4, served_2))
    # the user's budget stays the plan's; the one that served the lowest p99 is kept, saying
    # it missed
    assert plan.extra["max_p99_ms"] == 0.001
    lowest = min(served_4["served_p99_ms"], served_2["served_p99_ms"])
    assert plan.extra["budget_check"]["served_p99_ms"] == lowest
    assert any("over the 0.001 ms budget" in w for w in plan.warnings)


def test_a_plan_served_within_its_budget_is_checked_once(
    ensemble: Ensemble, tmp_path: Path
) -> None:
    asked, plan_under = _planner(ensemble, [4, 2])
    never_asked, other = _planner(ensemble, [1])
    plan = plan_checked([plan_under, other], ensemble, detect_devices(), 60_000.0, tmp_path)

    assert asked == [60_000.0] and never_asked == []
    (check,) = plan.extra["budget_checks"]
    assert 0 < check["served_p99_ms"] <= 60_000.0 and plan.warnings == ()


def test_no_planner_with_a_plan_within_the_budget_is_the_first_ones_error(
    ensemble: Ensemble, tmp_path: Path
) -> None:
    _, refuses = _planner(ensemble, [])
    _, also = _planner(ensemble, [])
    with pytest.raises(PlanError, match="no plan meets a p99 latency of 5 ms"):
        plan_checked([refuses, also], ensemble, detect_devices(), 5.0, tmp_path)
