"""The serving model: the throughput a candidate plan reaches when Triton serves it, as the
search's evaluator. docs/SERVING.md derives it; in short:

- Triton schedules *units*: a member served alone, or a group of co-located members served in
  one Python-backend model (one process per instance, the members run one after another on
  each batch, each in chunks of its own batch size).
- On a CPU every instance is one thread. A unit costs, per sample, its members' one-thread
  CPU seconds at the batch they actually run plus its process's share of a call (spread over
  the batch the batcher actually forms); it can use at most one core per instance.
  tritonserver pays its side of each call (a batch shares it) and, per request (a batch does
  not share it), the request off the wire and, unless one group serves every member, one
  request to each unit, the scheduler and the combine step; a load generator on the same
  machine adds its own share.
- On a GPU a unit gets the profile's throughput of k instances together (one instance's
  when the profile has no concurrency entries: then this is the base model of docs/PLANNING.md).
- Devices are time-shared as in the base model: the largest X such that every unit gets X
  samples/s from its devices, each device's time summing to at most 1 — a small LP.
- A request alone waits for each unit's call; a group whose members run in parallel
  threads (where that saves a lone request PARALLEL_MEMBERS_GAIN of its members' time) waits for
  its slowest member, or for its members' sum over the cores, plus PARALLEL_MEMBERS_COST_S. Under
  load the cores are busy and it runs them one after another: running in parallel changes latency,
  not throughput.
- The batch a member's batcher forms is not the planned one: it holds the requests that arrive
  while one call runs, and calls run slower when more threads are runnable than there are
  cores. The model iterates X → batches reached → costs → X to a fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linprog

from tritongen.errors import PlanError
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, Problem, build_problem
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Inventory

SOLVES = 3  # LPs solved while the batches reached settle (then one more)
IN_FLIGHT = 2.0  # requests in flight per request batched at the fullest unit (measured)
TAIL = 1.5  # p99 latency / mean latency at that concurrency (measured)
ITERATIONS = 10  # batch updates at a fixed throughput between two solves
# Parallel members: what it costs a lone request beyond its slowest member (hand-offs, the cores'
# caches: served, it saved 0.9-1.3 ms less than the profile said on vision and heavy), and the
# share of the members' time it must save to be chosen, since under moderate load it cost
# vision 5-13% of its throughput (docs/SERVING.md, benchmarks/parallel_members.md).
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


@dataclass(frozen=True)
class Prediction:
    throughput: float  # ensemble samples/s once enough requests are in flight
    latency_ms: float  # one request alone (concurrency 1)
    concurrency: int  # requests in flight that reach `throughput` (about)
    batches: dict[int, float] = field(default_factory=dict)  # member -> batch reached
    bottleneck: int = 0  # the member whose unit binds hardest

    @property
    def p99_ms(self) -> float:
        """The 99th percentile latency at `concurrency`: Little's law gives the mean, C / X;
        the tail is a fixed multiple of it (measured, docs/SERVING.md)."""
        if self.throughput <= 0:
            return math.inf
        return max(self.latency_ms, 1000 * TAIL * self.concurrency / self.throughput)


class ServingModel:
    """Predicts a candidate's served throughput (the search's `Evaluator`).

    `client_on_host`: the load generator shares this machine's cores (a benchmark); a plan
    for production serves clients elsewhere."""

    def __init__(
        self,
        problem: Problem,
        cost: ServingCost,
        *,
        client_on_host: bool = False,
        max_p99_ms: float | None = None,
        dynamic_batching: bool = True,
        max_in_flight: int | None = None,
    ) -> None:
        self.problem = problem
        self.max_in_flight = max_in_flight
        self.dynamic_batching = dynamic_batching
        self.cost = cost
        self.client_on_host = client_on_host
        self.max_p99_ms = max_p99_ms
        self.calls = 0
        self._cache: dict[Candidate, Prediction] = {}
        # the CPU that runs tritonserver (the first): its threads share that CPU's cores
        self._server_cpu = next(
            (d for d, dev in enumerate(problem.devices) if dev.kind == "cpu"), 0
        )
        self._cores = self._cores_of(self._server_cpu) if problem.devices else 1

    @property
    def placement_only(self) -> bool:
        """True when the model is the base model of docs/PLANNING.md (no CPU and no concurrency
        entries): instance counts and threads do not matter and the LP's prices prune moves."""
        has_cpu = any(d.kind == "cpu" for d in self.problem.devices)
        return not has_cpu and not self.problem.concurrent

    def evaluate(self, candidate: Candidate) -> float:
        """The predicted throughput; under a latency budget, a plan that misses it scores
        below every one that meets it, and the nearer it comes, the higher."""
        prediction = self.predict(candidate)
        if self.meets_budget(prediction):
            return prediction.throughput
        return -prediction.p99_ms

    def meets_budget(self, prediction: Prediction) -> bool:
        return self.max_p99_ms is None or prediction.p99_ms <= self.max_p99_ms

    def predict(self, candidate: Candidate) -> Prediction:
        if candidate not in self._cache:
            self.calls += 1
            self._cache[candidate] = self._predict(candidate)
        return self._cache[candidate]

    def _predict(self, c: Candidate) -> Prediction:
        units = serving_units(self.problem, c, self.dynamic_batching)
        if any(not u.counts for u in units):
            return Prediction(0.0, math.inf, 1)
        if self.max_in_flight is not None:
            units = [self._held_to_in_flight(u, self.max_in_flight) for u in units]
        overhead = self._request_cpu_s(units)
        spinners = _spinners(self.problem, units)
        reached, runnable, x = [u.cap for u in units], self._all_busy(units, spinners, 0.0), 0.0
        busiest = self._busiest_gpu_unit(units)  # a set: at most the one
        for _ in range(SOLVES):
            solved = self._solve(units, reached, overhead, spinners, (runnable, x))
            x, full = solved.throughput, busiest | solved.saturated
            for _ in range(ITERATIONS):  # the batches that throughput x leads to
                new, runnable = self._reached_batches(
                    units, reached, x, runnable, overhead, full, spinners
                )
                done = max(abs(a - b) for a, b in zip(new, reached, strict=True)) < 0.05
                reached = new
                if done:
                    break
        solved = self._solve(units, reached, overhead, spinners, (runnable, x))
        return Prediction(
            throughput=solved.throughput,
            latency_ms=1000 * self._alone_latency_s(units, overhead, spinners),
            concurrency=self._concurrency(units, reached),
            batches={m: b for u, b in zip(units, reached, strict=True) for m in u.members},
            bottleneck=units[solved.binding].members[0],
        )

    @staticmethod
    def _held_to_in_flight(unit: Unit, in_flight: int) -> Unit:
        """With at most `in_flight` requests, a unit's instances hold at most 1 / IN_FLIGHT of
        them in their batches (the rest are on their way to it or back)."""
        most = max(1.0, in_flight / IN_FLIGHT / sum(unit.counts.values()))
        return replace(unit, cap=min(unit.cap, most))

    def _busiest_gpu_unit(self, units: list[Unit]) -> frozenset[int]:
        """The GPU unit whose instances have the most work per ensemble sample at full batches:
        with many requests in flight they queue there and its batcher finds full batches (a
        GPU's time is shared by calls, not threads: the run queue says nothing of it)."""
        on_gpu = [u for u, unit in enumerate(units) if not self._on_cpu(unit)]
        if not on_gpu:
            return frozenset()
        return frozenset({max(on_gpu, key=lambda u: self._instance_seconds(units[u]))})

    def _instance_seconds(self, unit: Unit) -> float:
        """Seconds of its instances' time one ensemble sample takes, at full batches."""
        instances = sum(unit.counts.values()) * max(1, unit.threads)
        return self._call_wall_s(unit, unit.cap, 1.0) / unit.cap / instances

    # ------------------------------------------------------------------ costs

    def _request_cpu_s(self, units: list[Unit]) -> float:
        """CPU each ensemble request (of one sample) costs outside the units' processes:
        tritonserver takes it off the wire and handles it; through the ensemble scheduler it
        also makes one request to every unit beyond the first (the first is in
        `per_request_s`), and the combine step; a local load generator sends it."""
        cost = self.cost
        seconds = cost.request_s + cost.wire_s
        one_model = len(units) == 1 and len(units[0].members) == len(self.problem.members)
        if not one_model:
            seconds += cost.per_request_s + (len(units) - 1) * cost.request_s
        return seconds + (cost.client_s if self.client_on_host else 0.0)

    def _server_calls_s(self, units: list[Unit], reached: list[float]) -> float:
        """The host's CPU per ensemble sample for the units' calls: tritonserver's side of
        each call (one per batch a unit's batcher forms); for a unit on a GPU also its
        Python-backend process's, which the GPU does not do: the call's overhead and the
        host time the profile measured around the GPU's work (launches, waits, copies)."""
        seconds = 0.0
        for unit, batch in zip(units, reached, strict=True):
            seconds += self.cost.server_call_s / max(1.0, batch)
            if not self._on_cpu(unit):
                seconds += self._call_seconds(max(1.0, batch)) + self._gpu_host_s(unit)
        return seconds

    def _gpu_host_s(self, unit: Unit) -> float:
        """Host CPU seconds per sample of the unit's GPU work, at its members' batches."""
        d = min(unit.counts)
        return sum(
            float(self.problem.host_cost[m, d, self.problem.batch_sizes.index(int(chunk))])
            for m, chunk in zip(unit.members, unit.chunks, strict=True)
        )

    def _call_seconds(self, batch: float) -> float:
        """A unit's process's CPU per sample for calls of `batch` one-sample requests."""
        cost = self.cost
        return cost.per_call_s / batch + cost.stub_request_s * (1 - 1 / batch) + cost.per_sample_s

    def _cpu_seconds(self, unit: Unit, d: int, batch: float) -> float:
        """CPU seconds per sample of `unit` on CPU device d when its batcher forms `batch`."""
        compute = sum(
            self._member_cpu_seconds(m, d, min(chunk, batch), unit.threads)
            for m, chunk in zip(unit.members, unit.chunks, strict=True)
        )
        return compute + self._call_seconds(max(1.0, batch))

    def _member_cpu_seconds(self, m: int, d: int, batch: float, threads: int) -> float:
        """Core-seconds per sample of member m on CPU d at `batch`, with `threads` threads (the
        profile's one-thread cost; all-core throughput for an all-core instance)."""
        one_thread = interpolate(self.problem, self.problem.cpu_cost[m, d], batch)
        if threads <= 1:
            return one_thread / self._scaling(m, d)
        cores = self.problem.devices[d].cores or 1
        all_cores = interpolate(self.problem, self.problem.rate[m, d], batch, inverse=True)
        share = (min(threads, cores) - 1) / max(1, cores - 1)
        rate = 1 / one_thread + share * (1 / all_cores - 1 / one_thread)
        return threads / rate

    def _scaling(self, m: int, d: int) -> float:
        """How much slower each one-thread instance runs when every core runs one (the profile's
        concurrency entries on a CPU; 1 when it has none)."""
        cores = self.problem.devices[d].cores or 1
        for (mm, dd, _), curve in self.problem.concurrent.items():
            if (mm, dd) == (m, d) and len(curve) >= 2:
                k = min(cores, len(curve))
                return min(1.0, curve[k - 1] / (k * curve[0]))
        return 1.0

    def _gpu_rate(self, unit: Unit, d: int) -> float:
        """Samples/s of the unit's instances on GPU d: the profile's rate of k instances side
        by side (of one, without concurrency entries); a group's members run one after another."""
        seconds = 0.0
        for m, chunk in zip(unit.members, unit.chunks, strict=True):
            b = self.problem.batch_sizes.index(int(chunk))
            curve = self.problem.concurrent.get((m, d, b))
            k = unit.counts[d]
            rate = curve[min(k, len(curve)) - 1] if curve else float(self.problem.rate[m, d, b])
            seconds += 1.0 / rate
        return 1.0 / seconds

    # ------------------------------------------------------------------ the LP

    def _solve(
        self,
        units: list[Unit],
        reached: list[float],
        overhead: float,
        spinners: dict[int, int],
        load: tuple[dict[int, float], float],
    ) -> _Solved:
        """The LP at the batches reached, at about throughput x. Where threads spin, they are
        always runnable and the scheduler shares a CPU's cores evenly among its runnable
        threads: a working thread gets no more than its share of the runnable ones (`load`:
        those threads per CPU, and throughput x), and the spinners keep theirs of the CPU's time
        when every instance is busy (at the limit)."""
        runnable, x = load
        overhead += self._server_calls_s(units, reached)
        sharing = {d: max(float(self._cores_of(d)), runnable.get(d, 0.0)) for d in spinners}
        pairs = [(u, d) for u, unit in enumerate(units) for d in sorted(unit.counts)]
        rates, limits = [], []
        for u, d in pairs:
            rate, limit = self._rate_and_limit(units[u], d, reached[u], sharing.get(d))
            rates.append(rate)
            limits.append(limit)
        crowd = self._all_busy(units, spinners, x * overhead)
        capacity = {d: 1.0 - spinners[d] / max(self._cores_of(d), crowd[d]) for d in spinners}
        return solve_units(
            len(units),
            self._device_count(),
            pairs,
            rates,
            limits,
            self._cpu_load(overhead),
            capacity,
        )

    def _all_busy(
        self, units: list[Unit], spinners: dict[int, int], server_cores: float
    ) -> dict[int, float]:
        """Threads runnable on each CPU when every instance is busy and the server uses
        `server_cores`."""
        runnable = {d: float(n) for d, n in spinners.items()}
        for unit in units:
            for d, n in unit.counts.items():
                if self.problem.devices[d].kind == "cpu":
                    runnable[d] = runnable.get(d, 0.0) + n * unit.threads
        if self._server_cpu in runnable:
            runnable[self._server_cpu] += self.cost.runnable_per_core * server_cores
        return runnable

    def _rate_and_limit(
        self, unit: Unit, d: int, batch: float, sharing: float | None
    ) -> tuple[float, float]:
        """Samples/s of `unit` given all of device d, and the share of d it can use (its
        threads' share of the `sharing` runnable threads, when spinners crowd the cores)."""
        device = self.problem.devices[d]
        if device.kind != "cpu":
            return self._gpu_rate(unit, d), 1.0
        cores = device.cores or 1
        rate = cores / self._cpu_seconds(unit, d, batch)
        return rate, min(1.0, unit.counts[d] * max(1, unit.threads) / (sharing or cores))

    def _cores_of(self, d: int) -> int:
        return self.problem.devices[d].cores or 1

    def _device_count(self) -> int:
        return len(self.problem.devices)

    def _cpu_load(self, overhead: float) -> dict[int, float]:
        """Share of each CPU's time one ensemble sample per second takes for its request (the
        server's CPU: the first CPU device)."""
        for d, device in enumerate(self.problem.devices):
            if device.kind == "cpu":
                return {d: overhead / (device.cores or 1)}
        return {}

    # ------------------------------------------------------------------ batches and latency

    def _reached_batches(
        self,
        units: list[Unit],
        reached: list[float],
        x: float,
        runnable: dict[int, float],
        overhead: float,
        full: frozenset[int],
        spinners: dict[int, int],
    ) -> tuple[list[float], dict[int, float]]:
        """The batch each unit's batcher forms at throughput x, and the threads runnable on
        each CPU (a call runs slower than alone when more threads want its cores than there are).

        A batcher forms the batch that arrives while one call runs: b = λ·(a + c·b) at λ samples/s
        per instance, a call taking a + c·b (a call's fixed cost a makes batches grow). A unit
        the LP keeps busy all the time (`full`: its instances' limit binds) finds full batches
        queued, and so does the busiest GPU unit. Calls
        run slower by the threads runnable per core: the units' busy threads, and
        tritonserver's and the client's, which the serving cost measures per core of their CPU
        use, and the spinning threads, always."""
        batches, now = [], {d: float(n) for d, n in spinners.items()}
        for u, (unit, batch) in enumerate(zip(units, reached, strict=True)):
            per_instance = x / sum(unit.counts.values())
            call_s = self._call_wall_s(unit, batch, self._stretch(unit, runnable))
            arrived = unit.cap if u in full else per_instance * call_s
            batches.append(float(np.clip(arrived, 1.0, unit.cap)))
            if self._on_cpu(unit):
                busy = min(1.0, per_instance * call_s / batch)
                for d, n in unit.counts.items():
                    now[d] = now.get(d, 0.0) + n * unit.threads * busy
        server_cores = x * (overhead + self._server_calls_s(units, reached))
        now[self._server_cpu] = (
            now.get(self._server_cpu, 0.0) + self.cost.runnable_per_core * server_cores
        )
        return batches, now

    def _stretch(self, unit: Unit, runnable: dict[int, float]) -> float:
        """How much slower than alone a call of `unit` runs on its first device."""
        d = min(unit.counts)
        return max(1.0, runnable.get(d, 0.0) / self._cores_of(d))

    def _on_cpu(self, unit: Unit) -> bool:
        return self.problem.devices[min(unit.counts)].kind == "cpu"

    def _call_wall_s(self, unit: Unit, batch: float, stretch: float) -> float:
        """Wall seconds one call of `batch` samples takes on the unit's first device."""
        d = min(unit.counts)
        if self.problem.devices[d].kind != "cpu":
            return batch / self._gpu_rate(unit, d)
        compute = batch * self._cpu_seconds(unit, d, batch) / max(1, unit.threads)
        return (compute + self.cost.server_call_s) * stretch

    def _alone_latency_s(
        self, units: list[Unit], overhead: float, spinners: dict[int, int]
    ) -> float:
        """One request alone: its own CPU overhead, then all its units at once; a CPU runs at
        most `cores` of them at once, and fewer when spinning threads take their share of its
        cores."""
        times = [self._alone_call_s(unit) for unit in units]
        spinning = spinners.get(self._server_cpu, 0)
        crowd = max(1.0, (spinning + len(times)) / self._cores) if spinning else 1.0
        return overhead + max(max(times) * crowd, sum(times) / self._cores)

    def _alone_call_s(self, unit: Unit) -> float:
        """Wall seconds of one lone one-sample call of `unit`: a group whose members run side by
        side waits for the slowest (or their sum spread over the cores) and the hand-offs, not
        for all of them."""
        seconds = self._call_wall_s(unit, 1.0, 1.0)
        if unit.parallel_members:
            seconds -= parallel_members_saving_s(self.problem, unit.members, min(unit.counts))
        return seconds

    def _concurrency(self, units: list[Unit], reached: list[float]) -> int:
        """Requests in flight that keep the fullest unit's batches as they are: its instances'
        batches, and as many again on their way to it or back to their clients."""
        queued = max(sum(u.counts.values()) * b for u, b in zip(units, reached, strict=True))
        return max(1, math.ceil(IN_FLIGHT * queued))


@dataclass(frozen=True)
class _Solved:
    throughput: float
    share: dict[tuple[int, int], float]  # (unit, device) -> share of the device's time
    binding: int  # the unit whose constraint binds hardest
    saturated: frozenset[int] = frozenset()  # units whose instances are busy all the time


def solve_units(
    n_units: int,
    n_devices: int,
    pairs: list[tuple[int, int]],
    rates: list[float],
    limits: list[float],
    request_load: dict[int, float],
    capacity: dict[int, float] | None = None,
) -> _Solved:
    """maximise X: Σ_d rate·f ≥ X per unit, Σ_u f + load_d·X ≤ capacity_d (1 unless given) per
    device, 0 ≤ f ≤ limit."""
    capacity = capacity or {}
    devices = {d for _, d in pairs}
    loaded_elsewhere = any(load > 0 and d not in devices for d, load in request_load.items())
    if len(devices) == 1 and len(pairs) == n_units and not loaded_elsewhere:
        d = devices.pop()
        return _one_device(pairs, rates, limits, request_load.get(d, 0.0), capacity.get(d, 1.0))
    n = len(pairs)
    a_ub = np.zeros((n_units + n_devices, n + 1))
    for i, ((u, d), rate) in enumerate(zip(pairs, rates, strict=True)):
        a_ub[u, i] = -rate
        a_ub[n_units + d, i] = 1.0
    a_ub[:n_units, n] = 1.0
    for d, load in request_load.items():
        a_ub[n_units + d, n] = load
    b_ub = np.concatenate([np.zeros(n_units), [capacity.get(d, 1.0) for d in range(n_devices)]])
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    bounds = [(0.0, limit) for limit in limits] + [(0.0, None)]
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status != 0:
        raise PlanError(f"the serving model's LP failed: {result.message}")
    marginals = -np.asarray(result.ineqlin.marginals)
    share = {pair: float(result.x[i]) for i, pair in enumerate(pairs)}
    binding = int(np.argmax(marginals[:n_units]))
    return _Solved(float(result.x[n]), share, binding, _saturated(pairs, share, limits))


def _saturated(
    pairs: list[tuple[int, int]], share: dict[tuple[int, int], float], limits: list[float]
) -> frozenset[int]:
    """The units that use every device they are on up to their limit: requests queue there."""
    units = {u for u, _ in pairs}
    for pair, limit in zip(pairs, limits, strict=True):
        if share[pair] < limit * (1 - 1e-6):
            units.discard(pair[0])
    return frozenset(units)


def _one_device(
    pairs: list[tuple[int, int]],
    rates: list[float],
    limits: list[float],
    load: float,
    capacity: float = 1.0,
) -> _Solved:
    """The LP in closed form when every unit shares one device: its time split in proportion
    to each unit's seconds per sample, each unit also held to its own share limit."""
    seconds = [1.0 / r for r in rates]
    x = min(
        capacity / (sum(seconds) + load),
        *(lim / s for lim, s in zip(limits, seconds, strict=True)),
    )
    share = {pair: x * s for pair, s in zip(pairs, seconds, strict=True)}
    binding = max(range(len(pairs)), key=lambda i: seconds[i] / limits[i])
    return _Solved(x, share, pairs[binding][0], _saturated(pairs, share, limits))


def runs_members_in_parallel(problem: Problem, c: Candidate, d: int) -> bool:
    """Whether the group on device d runs its members in parallel: as the candidate says, else
    on a CPU where that saves a lone request PARALLEL_MEMBERS_GAIN of its members' time."""
    members = tuple(problem.group_members(c, d))
    if problem.devices[d].kind != "cpu" or len(members) < 2:
        return False
    if c.parallel_members:
        return c.parallel_members[d]
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
    """Each member's one-thread seconds for one sample on CPU d (the profile's batch 1)."""
    return [interpolate(problem, problem.cpu_cost[m, d], 1.0) for m in members]


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


def _spinners(problem: Problem, units: list[Unit]) -> dict[int, int]:
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


def predict_plan(
    plan: Plan,
    inventory: Inventory,
    profile: Profile,
    *,
    client_on_host: bool = False,
    max_in_flight: int | None = None,
) -> Prediction:
    """The serving model's prediction for a plan as written (e.g. a baseline's, or one read
    from plan.json); `client_on_host` when the load generator shares this machine;
    `max_in_flight` when clients never have more requests in flight (a benchmark's highest
    concurrency)."""
    members = list(plan.allocation)
    problem = build_problem(members, inventory, profile)
    model = ServingModel(
        problem,
        profile.serving_cost,
        client_on_host=client_on_host,
        dynamic_batching=plan.dynamic_batching,
        max_in_flight=max_in_flight,
    )
    return model.predict(plan_candidate(problem, plan))
