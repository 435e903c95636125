"""The exact best placement under the base model, by mixed-integer programming.

A reference for tests and benchmarks, not a planner: it scales badly with identical devices
(symmetry) and cannot take a measured evaluator. Under the base model one instance per placed
(member, device) is enough (more only cost memory), so the MILP chooses, per member, one batch
size s[m,b] and the devices z[m,d,b] it sits on, and time fractions f[m,d,b] ≤ z[m,d,b]:

    maximise X  s.t.  Σ_b s[m,b] = 1,  z[m,d,b] ≤ s[m,b],  f[m,d,b] ≤ z[m,d,b],
                      Σ_{d,b} rate·f ≥ X (every m),  Σ_{m,b} f ≤ 1 (every d),
                      Σ_{m,b} memory·z ≤ capacity (every d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from tritongen.plan.problem import Candidate, Problem


@dataclass(frozen=True)
class Optimum:
    throughput: float
    candidate: Candidate | None  # None when the solver stopped before finding one
    proven: bool  # False when the time limit stopped it: throughput is then a lower bound
    upper_bound: float  # the solver's dual bound (equal to throughput when proven)


def best_placement(problem: Problem, time_limit: float = 60.0) -> Optimum:
    """Solve the MILP above with HiGHS."""
    model = _Model(problem)
    result = milp(
        model.cost,
        constraints=model.constraints(),
        integrality=model.integrality,
        bounds=Bounds(0, model.upper),
        options={"time_limit": time_limit, "disp": False},
    )
    if result.x is None:
        return Optimum(0.0, None, False, float("inf"))
    throughput = -float(result.fun) * model.scale
    bound = -float(getattr(result, "mip_dual_bound", result.fun)) * model.scale
    proven = result.status == 0
    return Optimum(throughput, model.candidate(result.x), proven, bound)


class _Model:
    """Variable layout: z (placed), f (time fraction) per allowed triple, s per pair, then X."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.triples = [tuple(t) for t in np.argwhere(problem.rate > 0)]
        self.pairs = sorted({(m, b) for m, _, b in self.triples})
        n_t, n_p = len(self.triples), len(self.pairs)
        self.z, self.f, self.s, self.x = 0, n_t, 2 * n_t, 2 * n_t + n_p
        self.size = self.x + 1
        self.cost = np.zeros(self.size)
        self.cost[self.x] = -1.0
        self.integrality = np.zeros(self.size)
        self.integrality[: self.f] = 1
        self.integrality[self.s : self.x] = 1
        self.upper = np.ones(self.size)
        self.upper[self.x] = np.inf
        self.scale = float(problem.rate.max())  # X in units of the fastest rate: well scaled

    def constraints(self) -> list[LinearConstraint]:
        p = self.problem
        n_m, n_d = len(p.members), len(p.devices)
        pair_index = {pair: i for i, pair in enumerate(self.pairs)}
        n_t = len(self.triples)
        rows = 2 * n_t + n_m + n_m + n_d + n_d
        a = lil_matrix((rows, self.size))
        low, high = np.full(rows, -np.inf), np.zeros(rows)
        for i, (m, d, b) in enumerate(self.triples):
            a[i, self.z + i], a[i, self.s + pair_index[(m, b)]] = 1, -1  # z ≤ s
            a[n_t + i, self.f + i], a[n_t + i, self.z + i] = 1, -1  # f ≤ z
            a[2 * n_t + m, self.f + i] = -p.rate[m, d, b] / self.scale  # X - Σ rate f ≤ 0
            a[2 * n_t + 2 * n_m + d, self.f + i] = 1  # Σ f ≤ 1
            a[2 * n_t + 2 * n_m + n_d + d, self.z + i] = p.memory[m, d, b] / p.capacity[d]
        for m in range(n_m):
            a[2 * n_t + m, self.x] = 1
        for (m, _), j in pair_index.items():
            a[2 * n_t + n_m + m, self.s + j] = 1  # Σ_b s = 1
        low[2 * n_t + n_m : 2 * n_t + 2 * n_m] = 1
        high[2 * n_t + n_m : 2 * n_t + 2 * n_m] = 1
        high[2 * n_t + 2 * n_m : 2 * n_t + 2 * n_m + n_d] = 1
        high[2 * n_t + 2 * n_m + n_d :] = 1  # memory as a share of each device's capacity
        return [LinearConstraint(a.tocsr(), low, high)]

    def candidate(self, x: np.ndarray) -> Candidate:
        p = self.problem
        counts = np.zeros((len(p.members), len(p.devices)), dtype=int)
        batch = [0] * len(p.members)
        for j, (m, b) in enumerate(self.pairs):
            if x[self.s + j] > 0.5:
                batch[m] = b
        for i, (m, d, _) in enumerate(self.triples):
            if x[self.z + i] > 0.5:
                counts[m, d] = 1
        return Candidate(
            counts=tuple(tuple(int(n) for n in row) for row in counts),
            batch=tuple(batch),
            threads=(0,) * len(p.members),
        )
