"""`make_plan`: the planner's entry: greedy searches (`tritongen.plan.greedy`) from worst-fit
and relaxed placements (`tritongen.plan.placement`), optionally re-ranked by measuring.

The search is kept apart from the evaluation: `greedy` proposes candidates and asks an
`Evaluator` for each one's throughput. `CostModelEvaluator` answers with the base model (the
time-sharing LP of `tritongen.plan.base_model`, docs/PLANNING.md); a measured evaluator (serve
the candidate, run perf_analyzer) plugs into the same protocol and re-ranks the model's best
candidates (`make_plan(..., refine_with=...)`).

Everything here works from member names and a profile alone: no model file is opened.

Threads: the profile gives a CPU's throughput as one instance using all its cores, and
the base model time-shares the CPU, so it cannot tell thread counts apart and the search does
not propose thread moves to it. The plan gives each CPU instance the cores divided evenly
among the instances on that CPU (so concurrent instances do not oversubscribe it); an
evaluator that models or measures threads (`placement_only = False`) gets thread moves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tritongen.errors import PlanError
from tritongen.plan.base_model import upper_bound
from tritongen.plan.from_candidate import allocation, batch_sizes, plan_from_candidate
from tritongen.plan.greedy import CostModelEvaluator, Evaluator, SearchResult, greedy
from tritongen.plan.moves import group_on
from tritongen.plan.nodes import plan_across_nodes
from tritongen.plan.placement import best_batch, relaxed_fit, worst_fit
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, Problem, Shape, build_problem
from tritongen.plan.serving_model import ServingModel
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Inventory
from tritongen.spec.ensemble import Spec

TIE_BREAK = 1e-5  # see CostModelEvaluator
LP_BUDGET = 600  # further starts stop once this many LPs are solved (~2 ms each)


EvaluatorSource = Evaluator | Callable[[Problem], Evaluator]


class PlanMeasurer(Protocol):
    """Measures a whole plan (e.g. renders it, serves it, runs perf_analyzer): samples/s."""

    def __call__(self, plan: Plan) -> float: ...


class PlanEvaluator:
    """Adapts a `PlanMeasurer` to the `Evaluator` protocol: candidate → Plan → measurement."""

    def __init__(self, problem: Problem, measure: PlanMeasurer, cost: ServingCost) -> None:
        self.problem = problem
        self.measure = measure
        self._model = ServingModel(problem, cost)

    def evaluate(self, candidate: Candidate) -> float:
        return self.measure(plan_from_candidate(self.problem, candidate, self._model))


def make_plan(
    members: Spec | Sequence[str],
    inventory: Inventory,
    profile: Profile,
    evaluator: EvaluatorSource | None = None,
    refine_with: EvaluatorSource | None = None,
    refine_top: int = 2,
    max_batch_size: int | None = None,
    budget: int = LP_BUDGET,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
    parallel_members: bool = False,
    client_on_host: bool = False,
) -> Plan:
    """Worst-fit, then greedy search; the plan the evaluator (default: the serving model)
    rates best. `shape` says whether CPU members may be served together in one model;
    `max_p99_ms` keeps only plans whose predicted p99 latency, at the concurrency that reaches
    their throughput, stays under it (a PlanError when none does). `parallel_members` lets a
    group run its members in parallel threads where that serves a lone request sooner.
    `client_on_host`: rate plans for a load generator on this host (a benchmark, whose budget
    is then checked where it is served); plan.json carries the figures of both conditions.

    `evaluator` and `refine_with` are Evaluators or factories taking the `Problem` (an
    Evaluator class whose constructor takes the problem is one). With `refine_with`, the
    `refine_top` best distinct candidates of the search are re-ranked by it (e.g. measured).
    Searches from further starting points run until `budget` LPs have been solved.
    When the devices name nodes, `tritongen.plan.nodes` decides which node serves each member and
    this search runs on each node's devices.
    """
    names, max_batch_size = _member_names(members, max_batch_size)
    if isinstance(members, Spec):
        max_p99_ms = latency_budget(members, max_p99_ms)

    def plan_on_devices(
        subset: Sequence[str], devices: Inventory, node_shape: Shape | None = None
    ) -> Plan:
        problem = build_problem(
            subset, devices, profile, max_batch_size, node_shape or shape, parallel_members
        )
        serving = ServingModel(
            problem, profile.serving_cost, client_on_host=client_on_host, max_p99_ms=max_p99_ms
        )
        return _plan_on_devices(
            problem, devices, profile, serving, evaluator, refine_with, refine_top, budget
        )

    if inventory.nodes:
        return plan_across_nodes(names, inventory, profile, plan_on_devices, max_batch_size)
    return plan_on_devices(names, inventory)


def latency_budget(spec: Spec, max_p99_ms: float | None) -> float | None:
    """The p99 budget in ms: the one asked for, else the spec's `slo.p99_ms`, else none."""
    if max_p99_ms is None and spec.slo is not None:
        return spec.slo.p99_ms
    return max_p99_ms


def _plan_on_devices(
    problem: Problem,
    inventory: Inventory,
    profile: Profile,
    serving: ServingModel,
    evaluator: EvaluatorSource | None,
    refine_with: EvaluatorSource | None,
    refine_top: int,
    budget: int,
) -> Plan:
    started = time.perf_counter()
    base = CostModelEvaluator(problem)
    guide = CostModelEvaluator(problem, tie_break=TIE_BREAK)
    scorer = _scorer(evaluator, problem, serving, guide)
    baseline = worst_fit(problem, best_batch(problem))
    results = []
    for start in _starts(problem, baseline, base):
        results.append(greedy(problem, start, scorer, guide, budget=budget))
        if guide.calls + serving.calls >= budget:
            break
    # The search's own scores when it used another evaluator; else the unperturbed model.
    best = max(
        results, key=lambda r: r.throughput if scorer is not guide else base.evaluate(r.best)
    )
    chosen, extra = best.best, dict[str, Any]()
    if refine_with is not None:
        chosen, extra = _refine(problem, results, _bind(refine_with, problem), refine_top)
    _check_budget(problem, serving, chosen)
    extra |= {
        "baseline": serving.evaluate(baseline),
        "baseline_allocation": allocation(problem, baseline),
        "baseline_batch_size": batch_sizes(problem, baseline),
        "bound": upper_bound(problem.members, inventory, profile),
        "search": {
            "steps": best.steps,
            "starts": len(results),
            "evaluations": guide.calls + base.calls + serving.calls,
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    if scorer not in (guide, serving):
        extra["evaluator_throughput"] = best.throughput
    return plan_from_candidate(problem, chosen, serving, extra)


def _scorer(
    evaluator: EvaluatorSource | None,
    problem: Problem,
    serving: ServingModel,
    guide: CostModelEvaluator,
) -> Evaluator:
    """The evaluator asked for; else the serving model, or the base model's tie-broken LP
    where the two agree (no CPU, no concurrency entries) and its prices prune the search."""
    plain = serving.placement_only and serving.max_p99_ms is None
    if evaluator is CostModelEvaluator or (plain and evaluator is None):
        return guide  # the base model, whose LP prices prune the search
    if evaluator is not None:
        return _bind(evaluator, problem)
    return serving


def _check_budget(problem: Problem, serving: ServingModel, chosen: Candidate) -> None:
    """A PlanError naming the budget and the best p99 found when no plan meets it."""
    prediction = serving.predict(chosen)
    if serving.meets_budget(prediction):
        return
    raise PlanError(
        f"no plan of {', '.join(problem.members)} meets a p99 latency of {serving.max_p99_ms:g} "
        f"ms on {', '.join(d.id for d in problem.devices)}: the lowest predicted is "
        f"{prediction.p99_ms:.1f} ms ({prediction.latency_ms:.1f} ms for a request alone); "
        "raise the budget or add devices"
    )


def _member_names(
    members: Spec | Sequence[str], max_batch_size: int | None
) -> tuple[list[str], int | None]:
    if isinstance(members, Spec):
        if max_batch_size is None and "max_batch_size" in members.model_fields_set:
            max_batch_size = members.max_batch_size
        return [m.name for m in members.members], max_batch_size
    return list(members), max_batch_size


def _bind(source: EvaluatorSource, problem: Problem) -> Evaluator:
    if isinstance(source, type) or not hasattr(source, "evaluate"):
        return source(problem)  # a factory, e.g. an Evaluator class taking the problem
    return source


def _starts(problem: Problem, baseline: Candidate, model: CostModelEvaluator) -> list[Candidate]:
    """Starting points: the baseline, then the others best first. The others are worst-fit
    and the LP relaxation's packing with every member one, two... batch sizes smaller
    (smaller footprints leave room for replicas that a search from larger ones cannot make)."""
    levels = [list(best_batch(problem))]
    while any(levels[-1]):
        levels.append([max(0, b - 1) for b in levels[-1]])
    others: set[Candidate] = set()
    for wanted in levels:
        for make in (worst_fit, relaxed_fit):
            try:
                others.add(make(problem, wanted))
            except PlanError:  # the baseline's packing found room; this one need not
                continue
    others.discard(baseline)
    starts = [baseline, *sorted(others, key=model.evaluate, reverse=True)]
    if problem.shape is Shape.grouped:
        return [_grouped(problem, s) for s in starts]
    return starts


def _grouped(problem: Problem, c: Candidate) -> Candidate:
    """c with every CPU's members grouped, where two or more are placed on it alone."""
    for d, device in enumerate(problem.devices):
        if device.kind == "cpu":
            c = group_on(problem, c, d) or c
    return c


def _refine(
    problem: Problem, results: list[SearchResult], refiner: Evaluator, top: int
) -> tuple[Candidate, dict[str, Any]]:
    pooled = sorted((sc for r in results for sc in r.ranked), key=lambda sc: -sc[0])
    shortlist: list[Candidate] = []
    for _, candidate in pooled:
        if candidate not in shortlist:
            shortlist.append(candidate)
        if len(shortlist) == top:
            break
    scored = [(refiner.evaluate(c), c) for c in shortlist]
    measured, chosen = max(scored, key=lambda sc: sc[0])
    return chosen, {"refined_throughput": measured, "refined_candidates": len(scored)}
