"""Plan the allocation matrix: from worst-fit placements (`tritongen.plan.placement`), a greedy
search for throughput.

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
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tritongen.errors import PlanError
from tritongen.plan.base_model import EPS, TimeSharing, dual_bound, solve_time_sharing, upper_bound
from tritongen.plan.conditions import plan_figures
from tritongen.plan.moves import group_on, neighbours
from tritongen.plan.nodes import plan_across_nodes
from tritongen.plan.placement import best_batch, relaxed_fit, worst_fit
from tritongen.plan.plan import Group, Plan
from tritongen.plan.problem import Candidate, Problem, Shape, build_problem
from tritongen.plan.serving_model import ServingModel, runs_members_in_parallel
from tritongen.profile.profile import Profile, ServingCost, default_cost
from tritongen.spec.devices import Inventory
from tritongen.spec.ensemble import Spec

MAX_STEPS = 500
TIE_BREAK = 1e-5  # see CostModelEvaluator
LP_BUDGET = 600  # further starts stop once this many LPs are solved (~2 ms each)
MIN_GAIN = 1e-7  # relative: a move must raise throughput by more than this to be taken
DEFAULT_QUEUE_DELAY_US = 100
MAX_QUEUE_DELAY_US = 100_000


# ---------------------------------------------------------------------------- evaluators


class Evaluator(Protocol):
    """Predicts or measures the ensemble throughput (samples/s) of a candidate."""

    def evaluate(self, candidate: Candidate) -> float: ...


class CostModelEvaluator:
    """The base model (docs/PLANNING.md). Solutions are cached by what the LP sees: placed pairs, batches.

    `tie_break` > 0 scales member m's rates by 1 + tie_break·(m+1): members with equal
    throughput then never bind together, so adding an instance of the one bottleneck always
    shows a gain (with exact ties no single move would, and the search would stop early).
    The search uses it; plans report the unperturbed model.
    """

    # Only which devices a member is on matters here, not its instance count or threads.
    placement_only = True

    def __init__(self, problem: Problem, tie_break: float = 0.0) -> None:
        self.problem = problem
        self.calls = 0
        self._scale = 1 + tie_break * np.arange(1, len(problem.members) + 1)[:, None]
        self._cache: dict[tuple[bytes, tuple[int, ...]], TimeSharing] = {}

    def evaluate(self, candidate: Candidate) -> float:
        return self.solve(candidate).throughput

    def rates(self, candidate: Candidate) -> np.ndarray:
        return self.problem.rates(candidate) * self._scale

    def solve(self, candidate: Candidate) -> TimeSharing:
        placed = np.asarray(candidate.counts) > 0
        key = (np.packbits(placed).tobytes(), candidate.batch)
        if key not in self._cache:
            self.calls += 1
            self._cache[key] = solve_time_sharing(self.rates(candidate))
        return self._cache[key]


# ---------------------------------------------------------------------------- greedy search


@dataclass(frozen=True)
class SearchResult:
    best: Candidate
    throughput: float
    steps: list[str]  # the moves taken, in order
    ranked: list[tuple[float, Candidate]] = field(default_factory=list)  # best first


def greedy(
    problem: Problem,
    start: Candidate,
    evaluator: Evaluator,
    guide: CostModelEvaluator | None = None,
    max_steps: int = MAX_STEPS,
    keep: int = 8,
    budget: int | None = None,
) -> SearchResult:
    """Take the best-scoring move until none raises the evaluator's throughput.

    `guide` (the base model) names the bottleneck and prices devices so that moves the LP
    proves useless are not evaluated; `evaluator` scores the rest. The search stops early
    once `guide` has solved `budget` LPs in all.
    """
    guide = guide or CostModelEvaluator(problem)
    detailed = not getattr(evaluator, "placement_only", False)
    current, score = start, evaluator.evaluate(start)
    seen: dict[Candidate, float] = {current: score}
    steps: list[str] = []
    prices = np.eye(len(problem.members))  # unit prices: each member's own capacity
    for _ in range(max_steps):
        if budget is not None and _spent(guide, evaluator) >= budget:
            break  # out of LP solves: keep the best so far
        solution = guide.solve(current)
        moves = [(n, c) for n, c in neighbours(problem, current, solution, detailed)]
        if evaluator is guide:  # LP prices bound each neighbour: evaluate best bounds first
            prices = np.vstack([prices, solution.member_prices])
            bounds = [dual_bound(guide.rates(c), prices) for _, c in moves]
        else:
            bounds = [np.inf] * len(moves)
        best = _best_move(moves, bounds, seen, evaluator, floor=score * (1 + MIN_GAIN))
        if best is None:
            break
        (name, current), score = best
        steps.append(name)
        if evaluator is guide:
            current = without_idle(current, guide.solve(current))
            seen[current] = score
    return SearchResult(current, score, steps, _distinct_best(seen, keep))


def _spent(guide: CostModelEvaluator, evaluator: Evaluator) -> int:
    """Evaluations so far: the guide's LPs, and the evaluator's predictions if it counts them."""
    return guide.calls + (0 if evaluator is guide else getattr(evaluator, "calls", 0))


def _best_move(
    moves: list[tuple[str, Candidate]],
    bounds: list[float],
    seen: dict[Candidate, float],
    evaluator: Evaluator,
    floor: float,
) -> tuple[tuple[str, Candidate], float] | None:
    """The best-scoring move above `floor`, evaluating moves in decreasing order of bound
    and stopping once no remaining bound can beat the best found."""
    best: tuple[tuple[str, Candidate], float] | None = None
    for bound, move in sorted(zip(bounds, moves, strict=True), key=lambda bm: -bm[0]):
        if bound <= floor:
            break
        neighbour = move[1]
        if neighbour not in seen:
            seen[neighbour] = evaluator.evaluate(neighbour)
        if seen[neighbour] > floor:
            best, floor = (move, seen[neighbour]), seen[neighbour]
    return best


def without_idle(c: Candidate, s: TimeSharing) -> Candidate:
    """Drop placements the LP gives no time (X unchanged): their memory is free for later
    moves. An LP optimum uses at most members + devices placements, so there are many."""
    if s.throughput <= 0:
        return c
    for m, d in zip(*np.nonzero(np.asarray(c.counts)), strict=True):
        if s.fractions[m, d] <= EPS:
            c = c.with_count(int(m), int(d), -c.counts[m][d])
    return c


def _distinct_best(seen: dict[Candidate, float], keep: int) -> list[tuple[float, Candidate]]:
    ordered = sorted(((s, c) for c, s in seen.items()), key=lambda sc: -sc[0])
    return ordered[:keep]


# ---------------------------------------------------------------------------- the plan

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
        return self.measure(candidate_plan(self.problem, candidate, self._model))


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
) -> Plan:
    """Worst-fit, then greedy search; the plan the evaluator (default: the serving model)
    rates best. `shape` says whether CPU members may be served together in one model;
    `max_p99_ms` keeps only plans whose predicted p99 latency, at the concurrency that reaches
    their throughput, stays under it (a PlanError when none does). `parallel_members` lets a
    group run its members in parallel threads where that serves a lone request sooner.

    `evaluator` and `refine_with` are Evaluators or factories taking the `Problem` (an
    Evaluator class whose constructor takes the problem is one). With `refine_with`, the
    `refine_top` best distinct candidates of the search are re-ranked by it (e.g. measured).
    Searches from further starting points run until `budget` LPs have been solved.
    When the devices name nodes, `tritongen.plan.nodes` decides which node serves each member and
    this search runs on each node's devices.
    """
    names, max_batch_size = _member_names(members, max_batch_size)
    if max_p99_ms is None and isinstance(members, Spec) and members.slo is not None:
        max_p99_ms = members.slo.p99_ms

    def plan_on_devices(
        subset: Sequence[str], devices: Inventory, node_shape: Shape | None = None
    ) -> Plan:
        problem = build_problem(
            subset, devices, profile, max_batch_size, node_shape or shape, parallel_members
        )
        serving = ServingModel(problem, profile.serving_cost, max_p99_ms=max_p99_ms)
        return _plan_on_devices(
            problem, devices, profile, serving, evaluator, refine_with, refine_top, budget
        )

    if inventory.nodes:
        return plan_across_nodes(names, inventory, profile, plan_on_devices, max_batch_size)
    return plan_on_devices(names, inventory)


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
        "baseline_allocation": _allocation(problem, baseline),
        "baseline_batch_size": _batch_sizes(problem, baseline),
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
    return candidate_plan(problem, chosen, serving, extra)


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


def candidate_plan(
    problem: Problem,
    candidate: Candidate,
    model: ServingModel | None = None,
    extra: dict[str, Any] | None = None,
) -> Plan:
    """The `Plan` of a candidate, with the serving model's prediction for it exactly as
    written (and the base model's LP figure beside it)."""
    model = model or ServingModel(problem, default_cost("not given"))
    prediction = model.predict(candidate)
    return Plan(
        allocation=_allocation(problem, candidate),
        batch_size=_batch_sizes(problem, candidate),
        predicted_throughput=prediction.throughput,
        threads=_threads(problem, candidate),
        queue_delay_us=_queue_delays(problem, candidate),
        groups=_groups(problem, candidate),
        extra={
            "model": "serving",
            "serving_cost": model.cost.to_json(),
            "base_lp_throughput": CostModelEvaluator(problem).evaluate(candidate),
            "bottleneck": problem.members[prediction.bottleneck],
            "predicted_batches": {
                problem.members[m]: round(b, 2) for m, b in sorted(prediction.batches.items())
            },
            **plan_figures(problem, model.cost, candidate, model.dynamic_batching),
            **({"max_p99_ms": model.max_p99_ms} if model.max_p99_ms is not None else {}),
            **(extra or {}),
        },
    )


def _groups(problem: Problem, c: Candidate) -> dict[str, Group]:
    """One group per grouped device, named after it; its batcher forms the largest batch."""
    groups = {}
    for d, device in enumerate(problem.devices):
        members = problem.group_members(c, d)
        if members:
            groups[device.id] = Group(
                members=tuple(problem.members[m] for m in members),
                allocation={device.id: c.counts[members[0]][d]},
                batch_size=problem.group_batch_size(c, d),
                threads=1,
                queue_delay_us=0,
                parallel_members=runs_members_in_parallel(problem, c, d),
            )
    return groups


def _allocation(problem: Problem, c: Candidate) -> dict[str, dict[str, int]]:
    return {
        member: {problem.devices[d].id: n for d, n in enumerate(c.counts[m]) if n}
        for m, member in enumerate(problem.members)
    }


def _batch_sizes(problem: Problem, c: Candidate) -> dict[str, int]:
    return {member: problem.batch_sizes[c.batch[m]] for m, member in enumerate(problem.members)}


def _threads(problem: Problem, c: Candidate) -> dict[str, int]:
    """Threads per CPU instance: the search's choice, else one (independent one-thread
    instances keep every core busy, as the serving model assumes)."""
    return {
        member: max(1, c.threads[m])
        for m, member in enumerate(problem.members)
        if any(c.counts[m][d] for d, dev in enumerate(problem.devices) if dev.kind == "cpu")
    }


def _queue_delays(problem: Problem, c: Candidate) -> dict[str, int]:
    """Wait for a full batch at most as long as one batch takes on the member's fastest device:
    a batch then forms while the previous one computes, and latency at most doubles."""
    delays = {}
    for m, member in enumerate(problem.members):
        b = c.batch[m]
        placed = np.nonzero(c.counts[m])[0]
        if all(problem.devices[d].kind == "cpu" for d in placed):
            # A busy one-thread instance lets requests queue on their own: waiting for a
            # fuller batch would only add latency.
            delays[member] = 0
            continue
        fastest = max(problem.rate[m, d, b] for d in placed)
        batch_seconds = problem.batch_sizes[b] / fastest
        delay = round(batch_seconds * 1e6)
        delays[member] = min(max(delay, DEFAULT_QUEUE_DELAY_US), MAX_QUEUE_DELAY_US)
    return delays
