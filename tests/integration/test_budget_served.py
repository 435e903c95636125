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
    # next planner (another shape, in the pipeline) is asked from the budget itself; with
    # nothing served within, there is no plan, and the error says what came nearest
    first_asked, first = _planner(ensemble, [4, 4])
    next_asked, then = _planner(ensemble, [2])
    with pytest.raises(PlanError, match=r"within 0.001 ms here: of the 2 served, the lowest"):
        plan_checked([first, then], ensemble, detect_devices(), 0.001, tmp_path)

    assert len(first_asked) == 2 and first_asked[0] == 0.001
    assert 0 < first_asked[1] < 0.001 * 0.001 / 0.1  # tightened by 0.001 ms over > 0.1 ms
    assert next_asked == [0.001]


def test_a_planner_with_nothing_within_the_budget_gives_way_to_the_next(
    ensemble: Ensemble, tmp_path: Path
) -> None:
    # the first planner (the planner's choice, in the pipeline) has nothing within; the next
    # one's (a shape's best) is served, and kept when within
    _, refuses = _planner(ensemble, [])
    asked, then = _planner(ensemble, [2])
    plan = plan_checked([refuses, then], ensemble, detect_devices(), 60_000.0, tmp_path)

    assert asked == [60_000.0]
    (check,) = plan.extra["budget_checks"]
    assert plan.extra["budget_check"] == check and check["planned_ms"] == 60_000.0
    assert plan.batch_size == dict.fromkeys(plan.batch_size, 2)
    assert plan.extra["max_p99_ms"] == 60_000.0


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
