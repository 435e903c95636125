"""The greedy search over candidates: the `Evaluator` protocol it asks for each candidate's
throughput, the base model's `CostModelEvaluator` that steers it (the time-sharing LP of
`tritongen.plan.base_model`, docs/PLANNING.md), and the hill climb itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tritongen.plan.base_model import EPS, TimeSharing, dual_bound, solve_time_sharing
from tritongen.plan.moves import neighbours
from tritongen.plan.problem import Candidate, Problem

MAX_STEPS = 500
MIN_GAIN = 1e-7  # relative: a move must raise throughput by more than this to be taken


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
