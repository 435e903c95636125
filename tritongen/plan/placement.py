"""Initial placements: worst-fit into device memory (the first step, docs/PLANNING.md) and the LP
relaxation's packing, the starting points of the greedy search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tritongen.errors import PlanError
from tritongen.plan.base_model import EPS, solve_time_sharing
from tritongen.plan.problem import Candidate, Problem
from tritongen.units import gib

# ---------------------------------------------------------------------------- worst-fit


def best_batch(problem: Problem) -> tuple[int, ...]:
    """Per member, the batch size of its highest single-instance throughput on any device."""
    return tuple(
        int(np.unravel_index(np.argmax(problem.rate[m]), problem.rate[m].shape)[1])
        for m in range(len(problem.members))
    )


def worst_fit(problem: Problem, batch: Sequence[int]) -> Candidate:
    """One instance per member, largest member first, onto the device with most free memory.

    When the members do not all fit at the wanted batch sizes, every member steps down one
    batch size and the packing starts again; a member that fits nowhere at its smallest batch
    size is a PlanError. GPUs are tried before CPUs: a CPU's memory is host RAM, far larger
    and far slower, and would otherwise take every member; the greedy search adds CPU
    instances where they help.
    """
    wanted = list(batch)
    while True:
        try:
            return _pack(problem, wanted)
        except PlanError:
            if not any(wanted):
                raise
            wanted = [max(0, b - 1) for b in wanted]


def _pack(problem: Problem, batch: Sequence[int]) -> Candidate:
    n_members, n_devices = len(problem.members), len(problem.devices)
    candidate = Candidate(
        counts=tuple((0,) * n_devices for _ in range(n_members)),
        batch=tuple(batch),
        threads=(0,) * n_members,
    )
    free = problem.capacity.copy()
    for m in sorted(range(n_members), key=lambda m: -_footprint(problem, m, batch[m])):
        b, d = _worst_fit_slot(problem, m, batch[m], free)
        candidate = candidate.with_batch(m, b).with_count(m, d, 1)
        free[d] -= problem.memory[m, d, b]
    return candidate


def _footprint(problem: Problem, m: int, b: int) -> float:
    sizes = problem.memory[m, :, b]
    return float(sizes[np.isfinite(sizes)].max(initial=0.0))


def _worst_fit_slot(problem: Problem, m: int, wanted: int, free: np.ndarray) -> tuple[int, int]:
    """(batch, device) for member m: the wanted batch or the next smaller that fits somewhere."""
    kinds_first = sorted({d.kind for d in problem.devices}, key=lambda k: k != "gpu")
    for b in range(wanted, -1, -1):
        for kind in kinds_first:
            slots = [
                d
                for d, device in enumerate(problem.devices)
                if device.kind == kind
                and problem.allowed(m, d, b)
                and problem.memory[m, d, b] <= free[d]
            ]
            if slots:
                return b, max(slots, key=lambda d: free[d])
    raise _does_not_fit(problem, m, free)


def _does_not_fit(problem: Problem, m: int, free: np.ndarray) -> PlanError:
    smallest = float(problem.memory[m].min())
    d = int(np.argmax(free))
    device = problem.devices[d]
    empty = "" if free[d] == problem.capacity[d] else " after placing the larger members"
    return PlanError(
        f"{problem.members[m]}: needs at least {gib(smallest)} per instance (its smallest batch "
        f"size) but the largest free device, {device.id}, has {gib(free[d])} free{empty}; "
        "add a larger device or profile a smaller batch size"
    )


def relaxed_fit(problem: Problem, batch: Sequence[int]) -> Candidate:
    """Pack the placements that the memory-free LP (every member everywhere) works hardest,
    while they fit; members left without a device then go where worst-fit puts them."""
    n_members, n_devices = len(problem.members), len(problem.devices)
    c = Candidate(tuple((0,) * n_devices for _ in range(n_members)), tuple(batch), (0,) * n_members)
    rates = problem.rate[np.arange(n_members), :, list(batch)]
    work = solve_time_sharing(rates).fractions * rates
    for flat in np.argsort(-work, axis=None):
        m, d = divmod(int(flat), n_devices)
        if work[m, d] > EPS and problem.fits(grown := c.with_count(m, d, 1)):
            c = grown
    for m in range(n_members):
        if not any(c.counts[m]):
            b, d = _worst_fit_slot(problem, m, c.batch[m], problem.free_memory(c))
            c = c.with_batch(m, b).with_count(m, d, 1)
    return c
