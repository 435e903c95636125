"""The units Triton schedules for a candidate (docs/SERVING.md): each member served alone, or a
group of co-located members in one Python-backend model, with the threads each instance runs
and the batch its batcher may form; the candidate a plan.json stands for; and the profile's
per-sample costs read at any batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from tritongen.errors import PlanError
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, Problem
from tritongen.profile.profile import ServingCost

# Parallel members are opt-in (`--parallel-members`): their throughput cost under load is not
# in the model. Settings, not measurements (docs/SERVING.md gives how they are checked): what a
# lone request pays beyond its slowest member (hand-offs between threads), and the share of the
# members' time parallel members must save a lone request to be chosen.
PARALLEL_MEMBERS_COST_S = 1.0e-3
PARALLEL_MEMBERS_GAIN = 0.2


@dataclass(frozen=True)
class Unit:
    """What Triton schedules as one model: one member, or a group of co-located members."""

    members: tuple[int, ...]
    counts: dict[int, int]  # device -> instances
    threads: int  # intra-op threads per instance (CPU)
    chunks: tuple[float, ...]  # per member: the batch its session runs (a group splits)
    cap: float  # the largest batch the batcher forms (the served maximum without a preferred size)
    spinning: int = 0  # per instance: threads that spin instead of working (oversubscribed CPU)
    parallel_members: bool = False  # a group whose members run in parallel threads on each batch

    @property
    def grouped(self) -> bool:
        return len(self.members) > 1


def runs_members_in_parallel(problem: Problem, c: Candidate, d: int) -> bool:
    """Whether the group on device d runs its members in parallel: as the candidate says, else,
    where the planner was asked to consider it, on a CPU where that saves a lone request
    PARALLEL_MEMBERS_GAIN of its members' time."""
    members = tuple(problem.group_members(c, d))
    if problem.devices[d].kind != "cpu" or len(members) < 2:
        return False
    if c.parallel_members:
        return c.parallel_members[d]
    if not problem.parallel_members:
        return False
    alone = sum(_alone_seconds(problem, members, d))
    return parallel_members_saving_s(problem, members, d) >= PARALLEL_MEMBERS_GAIN * alone


def parallel_members_saving_s(problem: Problem, members: tuple[int, ...], d: int) -> float:
    """Seconds a lone one-sample request saves when the members run in parallel on CPU d
    rather than one after another: it then waits for the slowest member, or for their sum
    spread over the cores, and for PARALLEL_MEMBERS_COST_S (negative: it loses)."""
    times = _alone_seconds(problem, members, d)
    cores = problem.devices[d].cores or 1
    return sum(times) - max(max(times), sum(times) / cores) - PARALLEL_MEMBERS_COST_S


def _alone_seconds(problem: Problem, members: tuple[int, ...], d: int) -> list[float]:
    """Each member's one-thread seconds for one lone sample on CPU d: measured cold where the
    profile did, else its CPU seconds at batch 1."""
    return [
        problem.lone.get((m, d, 1), interpolate(problem, problem.cpu_cost[m, d], 1.0))
        for m in members
    ]


def serving_units(problem: Problem, c: Candidate, dynamic_batching: bool = True) -> list[Unit]:
    """The units Triton schedules for candidate c (each grouped device's group, then every
    other member alone). onnxruntime's spare intra-op threads spin while they wait for work,
    for tens of milliseconds after each call: where a CPU's instances want more threads than it
    has cores, a multi-thread instance does one thread's work and its other threads spin."""
    units = _units(problem, c, dynamic_batching)
    wanted = {
        d: sum(u.counts.get(d, 0) * u.threads for u in units)
        for d, device in enumerate(problem.devices)
        if device.kind == "cpu"
    }
    return [_with_spinners(problem, u, wanted) for u in units]


def _with_spinners(problem: Problem, unit: Unit, wanted: dict[int, int]) -> Unit:
    """`unit` as one working thread per instance and the rest spinning, where a CPU it is on is
    oversubscribed (`wanted`: the threads the plan's instances want per CPU)."""
    if unit.threads <= 1:
        return unit
    if not any(wanted[d] > (problem.devices[d].cores or 1) for d in unit.counts if d in wanted):
        return unit
    return replace(unit, threads=1, spinning=unit.threads - 1)


def spinners_of(problem: Problem, units: list[Unit]) -> dict[int, int]:
    """Spinning threads per CPU (only CPUs that have some)."""
    spinners: dict[int, int] = {}
    for unit in units:
        for d, n in unit.counts.items():
            if unit.spinning and problem.devices[d].kind == "cpu":
                spinners[d] = spinners.get(d, 0) + n * unit.spinning
    return spinners


def _units(problem: Problem, c: Candidate, dynamic_batching: bool) -> list[Unit]:
    """A group's batcher forms batches up to its batch size; a member's, up to its own. A batch
    size of 1 renders no preferred size: Triton's batcher then forms the largest batch queued,
    up to the served maximum (none without dynamic batching)."""

    def cap(batch: float) -> float:
        if not dynamic_batching:
            return 1.0
        return batch if batch > 1 else float(max(problem.batch_sizes))

    grouped: set[int] = set()
    units = []
    for d in range(len(problem.devices)):
        members = problem.group_members(c, d)
        if members:
            grouped.update(members)
            units.append(
                Unit(
                    members=tuple(members),
                    counts={d: c.counts[members[0]][d]},
                    threads=1,
                    chunks=tuple(float(problem.batch_sizes[c.batch[m]]) for m in members),
                    cap=cap(problem.group_batch_size(c, d)),
                    parallel_members=runs_members_in_parallel(problem, c, d),
                )
            )
    for m in range(len(problem.members)):
        if m in grouped:
            continue
        batch = float(problem.batch_sizes[c.batch[m]])
        counts = {d: n for d, n in enumerate(c.counts[m]) if n > 0}
        units.append(Unit((m,), counts, max(1, c.threads[m]), (batch,), cap(batch)))
    return units


def interpolate(problem: Problem, values: np.ndarray, batch: float, inverse: bool = False) -> float:
    """`values` (per profiled batch size) at a fractional `batch`, linear between the profiled
    sizes around it and flat beyond them; `inverse` reads rates as seconds per sample."""
    sizes = np.asarray(problem.batch_sizes, dtype=float)
    known = np.isfinite(values) & (values > 0)
    if not known.any():
        raise PlanError("the profile has no CPU cost for a member placed on a CPU")
    y = 1.0 / values[known] if inverse else values[known]
    return float(np.interp(batch, sizes[known], y))


def plan_candidate(problem: Problem, plan: Plan) -> Candidate:
    """The candidate a plan.json stands for in `problem` (whose members and devices it uses).
    A plan without dynamic batching runs every request alone: batch 1."""
    index = {d.id: i for i, d in enumerate(problem.devices)}
    counts, batch = [], []
    for member in problem.members:
        row = [0] * len(problem.devices)
        for device_id, n in plan.allocation[member].items():
            row[index[device_id]] = n
        counts.append(tuple(row))
        wanted = plan.batch_size[member] if plan.dynamic_batching else 1
        batch.append(_batch_index(problem, member, wanted))
    on_device = [
        next((g for g in plan.groups.values() if device.id in g.allocation), None)
        for device in problem.devices
    ]
    grouped = tuple(g is not None for g in on_device)
    group_batch = tuple(
        -1 if g is None else _batch_index(problem, ",".join(g.members), g.batch_size)
        for g in on_device
    )
    threads = tuple(plan.threads.get(m, 0) for m in problem.members)
    parallel_on = tuple(g is not None and g.parallel_members for g in on_device)
    return Candidate(tuple(counts), tuple(batch), threads, grouped, group_batch, parallel_on)


def _batch_index(problem: Problem, member: str, batch: int) -> int:
    if batch not in problem.batch_sizes:
        raise PlanError(
            f"{member}: the plan's batch size {batch} is not in the profile "
            f"({list(problem.batch_sizes)}); profile it or plan again"
        )
    return problem.batch_sizes.index(batch)


def gpu_host_seconds(problem: Problem, unit: Unit) -> float:
    """Host CPU seconds per sample of a GPU unit's work, at its members' batches."""
    d, batches = min(unit.counts), problem.batch_sizes
    return sum(
        float(problem.host_cost[m, d, batches.index(int(chunk))])
        for m, chunk in zip(unit.members, unit.chunks, strict=True)
    )


def gpu_work_s(problem: Problem, unit: Unit, d: int, together: int | None = None) -> float:
    """Seconds one instance of a GPU unit takes per sample of its members' work while
    `together` instances (all of its own by default) run side by side: the profile's rate of k
    instances together (held beyond the largest k measured; one instance's without
    concurrency entries) shared by the k; a group's members run one after another."""
    seconds, k = 0.0, together or unit.counts[d]
    for m, chunk in zip(unit.members, unit.chunks, strict=True):
        b = problem.batch_sizes.index(int(chunk))
        curve = problem.concurrent.get((m, d, b))
        rate = curve[min(k, len(curve)) - 1] if curve else float(problem.rate[m, d, b])
        seconds += k / rate
    return seconds


def gpu_rate(problem: Problem, unit: Unit, d: int) -> float:
    """Samples/s of the unit's instances with all of GPU d's time (the profile's curve)."""
    return unit.counts[d] / gpu_work_s(problem, unit, d)


def gpu_instances_rate(
    problem: Problem, cost: ServingCost, unit: Unit, d: int, batch: float
) -> float:
    """Samples/s the unit's instances on GPU d can pass at calls of `batch` one-sample requests.
    Each instance is one Python-backend process that serves one call at a time: between two
    calls on the GPU it takes the call's requests in and writes their responses, on the host,
    while its GPU work waits (the serving cost's per-call and per-request seconds). That host
    time is the instance's, not the GPU's: the GPU serves other instances meanwhile."""
    b = max(1.0, batch)
    stub = (cost.per_call_s + cost.stub_request_s * (b - 1)) / b + cost.per_sample_s
    return unit.counts[d] / (gpu_work_s(problem, unit, d) + stub)


def combine_step_instances(throughput: float, cost: ServingCost, members: int) -> int:
    """Instances of the combine step that serve `throughput` requests/s. It is a Python-backend
    model like a member's, one call at a time per instance, and each request costs it a call's
    share and, for each member's output it reads, what one request's tensor costs a member's
    process (the serving cost's per-call, per-request and per-sample seconds); reckoned at
    one-request calls, so that it does not bind: a spare instance costs one idle process."""
    per_request = cost.per_call_s + members * (cost.stub_request_s + cost.per_sample_s)
    return max(1, math.ceil(throughput * per_request))
