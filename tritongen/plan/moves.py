"""The greedy search's moves: every neighbour of a candidate worth evaluating.

Each generator proposes candidates; the LP's prices (`TimeSharing`) rank and filter them:
a placement whose reduced cost is ≤ 0 provably cannot raise the base model's throughput.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tritongen.plan.base_model import EPS, TimeSharing
from tritongen.plan.problem import Candidate, Problem, Shape


def neighbours(
    problem: Problem, current: Candidate, solution: TimeSharing, detailed: bool = False
) -> Iterator[tuple[str, Candidate]]:
    """Every move worth evaluating from `current`, each already checked against memory.

    `detailed`: the evaluator also sees instance counts and threads, so extra instances on
    a device and thread changes are proposed too.
    """
    moves = [
        _add_moves(problem, current, solution, detailed),
        _relocate_moves(problem, current, solution),
        _make_room_moves(problem, current, solution),
        _batch_moves(problem, current, solution),
    ]
    if detailed:
        moves += [
            _thread_moves(problem, current),
            _shape_moves(problem, current),
            _spread_moves(problem, current, solution),
        ]
    for generator in moves:
        for name, candidate in generator:
            candidate = problem.normalize(candidate)
            if candidate != current and problem.fits(candidate):
                yield name, candidate


def _reduced_cost(problem: Problem, c: Candidate, s: TimeSharing, m: int, d: int) -> float:
    """LP pricing: ≤ 0 proves that placing m on d cannot raise X; > 0 says it may."""
    return float(problem.rate[m, d, c.batch[m]] * s.member_prices[m] - s.device_prices[d])


def _bottlenecks(s: TimeSharing, limit: int = 3) -> list[int]:
    """Members whose constraint binds, most binding first (the bottleneck leads)."""
    order = np.argsort(-s.member_prices, kind="stable")
    return [int(m) for m in order[:limit] if s.member_prices[m] > EPS] or [s.bottleneck]


def _add_moves(
    problem: Problem, c: Candidate, s: TimeSharing, detailed: bool
) -> Iterator[tuple[str, Candidate]]:
    """Add an instance of a bottleneck member where its profile allows it, or on every
    device where the LP prices it (replicas one at a time can each gain too little)."""
    for m in _bottlenecks(s):
        for d in range(len(problem.devices)):
            if not problem.allowed(m, d, c.batch[m]):
                continue
            placed = c.counts[m][d] > 0
            if (placed and detailed) or (not placed and _reduced_cost(problem, c, s, m, d) > EPS):
                yield f"add {problem.members[m]} on {problem.devices[d].id}", c.with_count(m, d, 1)
        yield from _spread(problem, c, s, m, f"add {problem.members[m]}", least=2)


def _spread(
    problem: Problem, c: Candidate, s: TimeSharing, m: int, name: str, least: int = 1
) -> Iterator[tuple[str, Candidate]]:
    """Member m added on its best-priced new device, its best two, and all where it fits."""
    targets = sorted(
        (
            (cost, d)
            for d in range(len(problem.devices))
            if not c.counts[m][d]
            and problem.allowed(m, d, c.batch[m])
            and (cost := _reduced_cost(problem, c, s, m, d)) > EPS
        ),
        reverse=True,
    )
    placed: list[str] = []
    for _, d in targets:
        grown = c.with_count(m, d, 1)
        if not problem.fits(grown):
            continue
        c = grown
        placed.append(problem.devices[d].id)
        if least <= len(placed) <= 2:
            yield f"{name} on {', '.join(placed)}", c
    if len(placed) > 2:
        yield f"{name} on {', '.join(placed)}", c


def _relocate_moves(
    problem: Problem, c: Candidate, s: TimeSharing
) -> Iterator[tuple[str, Candidate]]:
    """Move one instance of a member to another device, or swap it with an instance there.

    A single move goes where the LP prices the member best. Swaps exchange the devices of
    two members' instances: each half alone may lose throughput or not fit, both together
    can win (a fast device hosting the member that needs it least).
    """
    placements = [(int(m), int(d)) for m, d in zip(*np.nonzero(np.asarray(c.counts)), strict=True)]
    for m, d in placements:
        targets = [
            (_reduced_cost(problem, c, s, m, t), t)
            for t in range(len(problem.devices))
            if t != d and c.counts[m][t] == 0 and problem.allowed(m, t, c.batch[m])
        ]
        best = max(targets, default=(0.0, -1))
        if best[0] > EPS:
            moved = c.with_count(m, d, -1).with_count(m, best[1], 1)
            yield _move_name(problem, m, d, best[1]), moved
    for i, (m, d) in enumerate(placements):
        for n, t in placements[i + 1 :]:
            if m != n and d != t and _swappable(problem, c, m, d, n, t):
                swapped = c.with_count(m, d, -1).with_count(m, t, 1)
                swapped = swapped.with_count(n, t, -1).with_count(n, d, 1)
                name = (
                    f"swap {problem.members[m]}@{problem.devices[d].id} with "
                    f"{problem.members[n]}@{problem.devices[t].id}"
                )
                yield name, swapped


def _swappable(problem: Problem, c: Candidate, m: int, d: int, n: int, t: int) -> bool:
    return (
        not c.counts[m][t]
        and not c.counts[n][d]
        and problem.allowed(m, t, c.batch[m])
        and problem.allowed(n, d, c.batch[n])
    )


def _move_name(problem: Problem, m: int, d: int, t: int) -> str:
    return f"move {problem.members[m]} {problem.devices[d].id}→{problem.devices[t].id}"


def _make_room_moves(
    problem: Problem, c: Candidate, s: TimeSharing
) -> Iterator[tuple[str, Candidate]]:
    """Add a bottleneck member on a full device after evicting the least-used instances there.

    Evicted instances are either dropped (when their member keeps another device) or moved
    to the device with the most free memory. Without this compound move the search stops as
    soon as memory is full, although trading a replica for the bottleneck can help.
    """
    for m in _bottlenecks(s, limit=2):
        for d in range(len(problem.devices)):
            if c.counts[m][d] or not problem.allowed(m, d, c.batch[m]):
                continue
            if _reduced_cost(problem, c, s, m, d) <= EPS:
                continue
            for relocate in (False, True):
                made = _evict_for(problem, c.with_count(m, d, 1), s, m, d, relocate)
                if made is not None:
                    how = "moving others" if relocate else "evicting"
                    yield f"add {problem.members[m]} on {problem.devices[d].id} ({how})", made


def _evict_for(
    problem: Problem, c: Candidate, s: TimeSharing, newcomer: int, d: int, relocate: bool
) -> Candidate | None:
    victims = sorted(
        (m for m in range(len(problem.members)) if m != newcomer and c.counts[m][d]),
        key=lambda m: s.fractions[m, d] * problem.rate[m, d, c.batch[m]],
    )
    for victim in victims:
        if problem.free_memory(c)[d] >= 0:
            break
        c = c.with_count(victim, d, -1)
        if relocate or not any(c.counts[victim]):
            rehomed = _rehome(problem, c, victim, exclude=d)
            if rehomed is None:
                return None
            c = rehomed
    return c if problem.fits(c) else None


def _rehome(problem: Problem, c: Candidate, m: int, exclude: int) -> Candidate | None:
    """One more instance of m on a device it is not on, the one with most free memory."""
    free = problem.free_memory(c)
    b = c.batch[m]
    slots = [
        t
        for t in range(len(problem.devices))
        if t != exclude
        and not c.counts[m][t]
        and problem.allowed(m, t, b)
        and problem.memory[m, t, b] <= free[t]
    ]
    return c.with_count(m, max(slots, key=lambda t: free[t]), 1) if slots else None


def _batch_moves(problem: Problem, c: Candidate, s: TimeSharing) -> Iterator[tuple[str, Candidate]]:
    """Change one member's batch size: any size for bottlenecks, one step for the others.

    A larger batch that overflows a device is repaired by stepping down the batch size of
    the other members there. A bottleneck's smaller batch frees memory, so it is also tried
    with more instances where they now fit.
    """
    bottlenecks = set(_bottlenecks(s))
    for m in range(len(problem.members)):
        options = range(len(problem.batch_sizes))
        if m not in bottlenecks:
            options = range(max(0, c.batch[m] - 1), min(len(problem.batch_sizes), c.batch[m] + 2))
        for b in options:
            changed = _rebatch(problem, c, m, b)
            if changed is None:
                continue
            name = f"batch {problem.members[m]} → {problem.batch_sizes[b]}"
            if b > c.batch[m] and not problem.fits(changed):
                repaired = _shrink_others(problem, changed, m)
                if repaired is not None:
                    yield f"{name}, others smaller", repaired
                continue
            yield name, changed
            if m in bottlenecks and b < c.batch[m]:
                yield from _add_after_shrink(problem, changed, s, m, name)


def _rebatch(problem: Problem, c: Candidate, m: int, b: int) -> Candidate | None:
    """Member m at batch b, leaving the devices whose profile lacks b (None if all do)."""
    if b == c.batch[m]:
        return None
    changed = c.with_batch(m, b)
    for d in np.nonzero(c.counts[m])[0]:
        if not problem.allowed(m, d, b):
            changed = changed.with_count(m, int(d), -c.counts[m][d])
    return changed if any(changed.counts[m]) else None


def _shrink_others(problem: Problem, c: Candidate, keep: int) -> Candidate | None:
    """Step down other members' batch sizes, largest saving first, until every device fits."""
    while not problem.fits(c):
        d = int(np.argmin(problem.free_memory(c)))
        steps = [
            (saving, m, b)
            for m in range(len(problem.members))
            if m != keep and c.counts[m][d]
            for b, saving in [_step_down(problem, c, m, d)]
            if saving > 0
        ]
        if not steps:
            return None
        _, m, b = max(steps)
        c = c.with_batch(m, b)
    return c


def _step_down(problem: Problem, c: Candidate, m: int, d: int) -> tuple[int, float]:
    """Member m's next smaller batch allowed on all its devices, and the bytes it frees on d."""
    placed = np.nonzero(c.counts[m])[0]
    for b in range(c.batch[m] - 1, -1, -1):
        if all(problem.allowed(m, t, b) for t in placed):
            saving = problem.memory[m, d, c.batch[m]] - problem.memory[m, d, b]
            return b, float(saving * c.counts[m][d])
    return c.batch[m], 0.0


def _add_after_shrink(
    problem: Problem, c: Candidate, s: TimeSharing, m: int, name: str
) -> Iterator[tuple[str, Candidate]]:
    yield from _spread(problem, c, s, m, f"{name}, add")


def _thread_moves(problem: Problem, c: Candidate) -> Iterator[tuple[str, Candidate]]:
    """On a CPU, change a member's threads per instance (powers of two up to the cores).

    The base model sees no difference (the profile gives one instance on all cores); a
    richer or measured evaluator can.
    """
    for d, device in enumerate(problem.devices):
        if device.kind != "cpu":
            continue
        choices = [2**k for k in range(int(np.log2(device.cores or 1)) + 1)]
        for m in range(len(problem.members)):
            if c.counts[m][d]:
                for t in choices:
                    if t != c.threads[m]:
                        yield f"threads {problem.members[m]} → {t}", c.with_threads(m, t)


def _shape_moves(problem: Problem, c: Candidate) -> Iterator[tuple[str, Candidate]]:
    """On a CPU: serve the members placed there alone in one model (a group of one-thread
    instances, one per core), or separately again; a group's instances one more or one less."""
    if problem.shape is Shape.separate:
        return
    for d, device in enumerate(problem.devices):
        if device.kind != "cpu":
            continue
        members = problem.group_members(c, d)
        if members:
            if problem.shape is Shape.auto:
                yield f"serve the members on {device.id} separately", c.with_grouped(d, False)
            n = c.counts[members[0]][d]
            for count in (n - 1, n + 1):
                if count >= 1:
                    yield (
                        f"group on {device.id}: {count} instances",
                        _with_counts(c, members, d, count),
                    )
            b = problem.batch_sizes.index(problem.group_batch_size(c, d))
            for step in (b - 1, b + 1):
                if 0 <= step < len(problem.batch_sizes):
                    size = problem.batch_sizes[step]
                    yield f"group on {device.id}: batches of {size}", c.with_group_batch(d, step)
            continue
        grouped = group_on(problem, c, d)
        if grouped is None:
            continue
        names = ", ".join(problem.members[m] for m in problem.group_members(grouped, d))
        for b, size in enumerate(problem.batch_sizes):  # smaller batches: lower latency
            yield f"group {names} on {device.id}, batches of {size}", grouped.with_group_batch(d, b)


def group_on(problem: Problem, c: Candidate, d: int) -> Candidate | None:
    """c with the members placed on CPU d alone served in one model, one one-thread instance
    per core; None when fewer than two members are placed there alone."""
    grouped = c.with_grouped(d, True)
    members = problem.group_members(grouped, d)
    if not members:
        return None
    cores = problem.devices[d].cores or 1
    return _with_threads(_with_counts(grouped, members, d, cores), members, 0)


def _spread_moves(
    problem: Problem, c: Candidate, s: TimeSharing
) -> Iterator[tuple[str, Candidate]]:
    """On a CPU whose members are served separately: each member gets one-thread instances,
    as many as the cores the LP gives it (rounded up) — independent instances keep every core
    busy where one instance's threads would scale sub-linearly."""
    for d, device in enumerate(problem.devices):
        if device.kind != "cpu" or problem.group_members(c, d):
            continue
        placed = [m for m in range(len(problem.members)) if c.counts[m][d]]
        spread = c
        for m in placed:
            cores = float(s.fractions[m, d]) * (device.cores or 1)
            spread = spread.with_count(m, d, max(1, math.ceil(cores - 1e-6)) - c.counts[m][d])
        spread = _with_threads(spread, placed, 0)
        if spread != c:
            yield f"spread the members on {device.id} over one-thread instances", spread


def _with_counts(c: Candidate, members: list[int], d: int, count: int) -> Candidate:
    for m in members:
        c = c.with_count(m, d, count - c.counts[m][d])
    return c


def _with_threads(c: Candidate, members: list[int], threads: int) -> Candidate:
    for m in members:
        c = c.with_threads(m, threads)
    return c
