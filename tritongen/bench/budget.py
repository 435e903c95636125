"""A latency budget checked by serving: the plan made under `--max-p99-ms` is served on the
embedded server and measured at the concurrency its plan.json says reaches its throughput
with a client on this host; where its p99 came out over the budget, it is planned again under
a budget tightened by the budget over what was served, and checked again; a plan is
given only when one served within the budget.

The serving model's p99 rests on a lone request's latency and on the tail (docs/SERVING.md),
which are least sure where a request fans out to many members served apart on few cores. A
budget is a promise the user deploys on, so it is measured rather than trusted where it can be.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tritongen.bench.compare import ServedMeasurer
from tritongen.errors import PlanError
from tritongen.plan.plan import Plan
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble

CHECKS = 3  # plans served at most: each takes a server start and a few seconds of load
PLANS = 8  # plans asked of the planner at most (seconds each, where serving one takes more)
CHECK_INTERVAL_MS = 2000


@dataclass(frozen=True)
class BudgetCheck:
    """One plan served at its predicted concurrency."""

    planned_ms: float  # the budget the plan was made under
    concurrency: int
    predicted_p99_ms: float  # plan.json's, for a client on this host
    served_p99_ms: float


Planner = Callable[[float], Plan]  # a budget in ms -> the plan made under it (or PlanError)


def plan_checked(
    planners: Sequence[Planner],
    ensemble: Ensemble,
    inventory: Inventory,
    budget_ms: float,
    workdir: Path | None = None,
) -> Plan:
    """The first planner's plan under `budget_ms`, served and measured; while its served p99
    is over the budget, the plan under a budget tightened by the budget over what was served;
    when that planner has nothing more within, the next planner's (e.g. another shape: the
    model ranks shapes least surely under a budget), up to CHECKS plans served. A plan that
    served over the budget is not served again (a p99 near the budget comes out either side of
    it from one measurement to the next). The first within the budget is returned; plan.json
    keeps its check (`budget_check`) and every one (`budget_checks`). A PlanError when none
    served within it, and the first planner's when no planner has a plan."""
    folder = workdir or Path(tempfile.mkdtemp(prefix="tritongen-budget-"))

    def serve(plan: Plan, planned_ms: float) -> BudgetCheck:
        return served_check(ensemble, inventory, plan, planned_ms, folder)

    tried: list[tuple[Plan, BudgetCheck]] = []
    refused: PlanError | None = None
    for plan_under in planners:
        try:
            _check_planner(plan_under, budget_ms, tried, serve)
        except PlanError as exc:
            refused = refused or exc
        if tried and (tried[-1][1].served_p99_ms <= budget_ms or len(tried) == CHECKS):
            break
    if not tried:
        assert refused is not None  # every planner refused, or there would be a plan
        raise refused
    return _chosen(tried, budget_ms)


def _check_planner(
    plan_under: Planner,
    budget_ms: float,
    tried: list[tuple[Plan, BudgetCheck]],
    serve: Callable[[Plan, float], BudgetCheck],
) -> None:
    """Serve (`serve(plan, planned_ms)`) `plan_under`'s plans into `tried`, tightening its
    budget after each miss, until one is within `budget_ms`, CHECKS are tried, or it has
    nothing within (PlanError)."""
    planned_ms = budget_ms
    for _ in range(PLANS):
        plan = plan_under(planned_ms)
        check = next((c for p, c in tried if _same_shape(p, plan)), None)
        if check is None:
            check = serve(plan, planned_ms)
            tried.append((plan, check))
            if check.served_p99_ms <= budget_ms or len(tried) == CHECKS:
                return
        planned_ms *= budget_ms / check.served_p99_ms


def _same_shape(a: Plan, b: Plan) -> bool:
    """Whether two plans serve the same: instances, batches, threads, groups, batching."""
    fields = ("allocation", "batch_size", "threads", "queue_delay_us", "groups")
    return a.dynamic_batching == b.dynamic_batching and all(
        getattr(a, f) == getattr(b, f) for f in fields
    )


def served_check(
    ensemble: Ensemble, inventory: Inventory, plan: Plan, planned_ms: float, folder: Path
) -> BudgetCheck:
    """`plan` served and measured at its predicted concurrency (a client on this host)."""
    level = int(plan.extra["predicted_concurrency_local_client"])
    measurer = ServedMeasurer(
        ensemble, inventory, folder, concurrencies=[level], interval_ms=CHECK_INTERVAL_MS
    )
    (point,) = measurer.points(plan)
    return BudgetCheck(
        planned_ms, level, float(plan.extra["predicted_p99_ms_local_client"]), point.p99_ms
    )


def _chosen(tried: list[tuple[Plan, BudgetCheck]], budget_ms: float) -> Plan:
    """The first plan tried that served within the budget, carrying the checks; a PlanError
    naming the lowest p99 served when none did."""
    within = [(p, c) for p, c in tried if c.served_p99_ms <= budget_ms]
    if not within:
        lowest = min((c for _, c in tried), key=lambda c: c.served_p99_ms)
        raise PlanError(
            f"no plan served a p99 latency within {budget_ms:g} ms here: of the {len(tried)} "
            f"served, the lowest was {lowest.served_p99_ms:.1f} ms at {lowest.concurrency} "
            "requests in flight; raise the budget or add devices"
        )
    plan, check = within[0]
    extra = plan.extra | {
        "max_p99_ms": budget_ms,
        "budget_check": asdict(check),
        "budget_checks": [asdict(c) for _, c in tried],
    }
    return replace(plan, extra=extra)
