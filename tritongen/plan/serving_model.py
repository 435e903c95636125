"""The serving model: the throughput a candidate plan reaches when Triton serves it, as the
search's evaluator. docs/SERVING.md derives it; in short:

- Triton schedules *units* (`serving_units`): a member served alone, or a group of co-located
  members served in one Python-backend model.
- On a CPU every instance is one thread. A unit costs, per sample, its members' one-thread
  CPU seconds at the batch they actually run plus its process's share of a call (spread over
  the batch the batcher actually forms); it can use at most one core per instance.
  tritonserver pays its side of each call (a batch shares it) and, per request (a batch does
  not share it), the request off the wire and, unless one group serves every member, one
  request to each unit, the scheduler and the combine step; a load generator on the same
  machine adds its own share. Under load all of these cost what the serving cost measured
  with the members busy on the same cores (`contention`).
- On a GPU a unit gets the profile's throughput of k instances together at its batch (one
  instance's without instance curves: the base model of docs/PLANNING.md); its calls take
  the host CPU the profile measured around them.
- Devices are time-shared as in the base model (`serving_lp`).
- A request alone waits for each unit's call; a group whose members run in parallel threads
  waits for its slowest member, or for its members' sum over the cores. Under load the cores
  are busy: running in parallel changes latency, and its throughput cost is not modelled
  (so the planner chooses it only when asked to).
- The batch a member's batcher forms is not the planned one: it holds the requests that arrive
  while one call runs, and calls run slower when more threads are runnable than there are
  cores. The model iterates X → batches reached → costs → X to a fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from tritongen.plan.plan import Plan
from tritongen.plan.problem import Candidate, Problem, build_problem, per_instance_share
from tritongen.plan.serving_lp import Solved, solve_units
from tritongen.plan.serving_units import (
    PARALLEL_MEMBERS_COST_S,
    PARALLEL_MEMBERS_GAIN,
    Unit,
    gpu_host_seconds,
    gpu_instances_rate,
    gpu_rate,
    gpu_work_s,
    interpolate,
    parallel_members_saving_s,
    plan_candidate,
    runs_members_in_parallel,
    serving_units,
    spinners_of,
)
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Inventory

__all__ = [
    "PARALLEL_MEMBERS_COST_S",
    "PARALLEL_MEMBERS_GAIN",
    "Prediction",
    "ServingModel",
    "predict_plan",
    "runs_members_in_parallel",
    "serving_units",
]

SOLVES = 3  # LPs solved while the batches reached settle (then one more)
ITERATIONS = 10  # batch updates at a fixed throughput between two solves
# Requests in flight per request batched at the fullest unit when it is kept busy: one batch in
# its call and the next one queued while that call runs (docs/SERVING.md, derived).
IN_FLIGHT = 2.0
# p99 over mean latency of the time a request waits for calls at the predicted concurrency: about
# IN_FLIGHT calls of the fullest unit (the one its batch queues behind and its own); clients that
# resend when answered come back as a batch, so the slowest are those that missed their batch's
# call and wait for the next free instance, on average half a call longer (docs/SERVING.md).
TAIL = 1 + 0.5 / IN_FLIGHT


@dataclass(frozen=True)
class Prediction:
    throughput: float  # ensemble samples/s once enough requests are in flight
    latency_ms: float  # one request alone (concurrency 1)
    concurrency: int  # requests in flight that reach `throughput` (about)
    batches: dict[int, float] = field(default_factory=dict)  # member -> batch reached
    bottleneck: int = 0  # the member whose unit binds hardest
    tail: float = TAIL  # p99 / mean latency at `concurrency` (`ServingModel._tail`)

    @property
    def p99_ms(self) -> float:
        """The 99th percentile latency at `concurrency`: Little's law gives the mean, C / X;
        the tail is `tail` times it (docs/SERVING.md)."""
        if self.throughput <= 0:
            return math.inf
        return max(self.latency_ms, 1000 * self.tail * self.concurrency / self.throughput)


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
        # What the path's CPU costs while the members compute on the same cores: the figures
        # throughput is charged (a lone request's trip and the tails are measured as they are)
        self._loaded = cost.under_load()
        self.client_on_host = client_on_host
        self.max_p99_ms = max_p99_ms
        self.calls = 0
        self._cache: dict[Candidate, Prediction] = {}
        # the CPU that runs tritonserver (the first): its threads share that CPU's cores
        self._server_cpu = next(
            (d for d, dev in enumerate(problem.devices) if dev.kind == "cpu"), 0
        )
        self._cores = self._cores_of(self._server_cpu) if problem.devices else 1
        self._shares = self._instance_shares()

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
        spinners = spinners_of(self.problem, units)
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
            tail=self._tail(units, reached, overhead, solved.throughput),
        )

    def _tail(self, units: list[Unit], reached: list[float], overhead: float, x: float) -> float:
        """p99 / mean latency at the predicted concurrency: a request's time is spent in the
        server's path, whose tail the serving cost measured (the stand-in computes nothing),
        and waiting for calls (TAIL); each weighs the share of the server's CPU it takes."""
        path_tail = self.cost.tail or TAIL
        busy = x * (overhead + self._server_calls_s(units, reached)) / self._cores
        share = min(1.0, busy)
        return 1 + (path_tail - 1) * share + (TAIL - 1) * (1 - share)

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
        cost = self._loaded
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
        cost = self._loaded
        seconds = self._client_waiting_s(units, reached)
        for unit, batch in zip(units, reached, strict=True):
            waiting = cost.wait_call_s * self._long_call(unit, batch)
            seconds += (cost.server_call_s + waiting) / max(1.0, batch)
            if not self._on_cpu(unit):
                seconds += self._call_seconds(max(1.0, batch)) + gpu_host_seconds(
                    self.problem, unit
                )
        return seconds

    def _long_call(self, unit: Unit, batch: float) -> float:
        """How much of a long call's waiting (the serving cost's `wait_call_s`, measured on
        calls of `wait_after_s`) one of the unit's calls at `batch` costs: all of it from
        `wait_after_s` on, in proportion below (docs/SERVING.md)."""
        after = self._loaded.wait_after_s
        if after <= 0:
            return 0.0
        return min(1.0, self._call_wall_s(unit, max(1.0, batch), 1.0) / after)

    def _client_waiting_s(self, units: list[Unit], reached: list[float]) -> float:
        """A local client's waiting per ensemble sample: once per response, which comes when
        the unit whose calls last longest answers."""
        if not self.client_on_host or not units:
            return 0.0
        u = max(range(len(units)), key=lambda i: self._call_wall_s(units[i], reached[i], 1.0))
        long_call = self._long_call(units[u], reached[u])
        return self._loaded.client_wait_call_s * long_call / max(1.0, reached[u])

    def _call_seconds(self, batch: float) -> float:
        """A unit's process's CPU per sample for calls of `batch` one-sample requests."""
        cost = self._loaded
        return cost.per_call_s / batch + cost.stub_request_s * (1 - 1 / batch) + cost.per_sample_s

    def _cpu_seconds(self, unit: Unit, d: int, batch: float) -> float:
        """CPU seconds per sample of `unit` on CPU device d when its batcher forms `batch`."""
        compute = sum(
            self._member_cpu_seconds(m, d, min(chunk, batch), unit.threads)
            * self._in_group(unit, m, d)
            for m, chunk in zip(unit.members, unit.chunks, strict=True)
        )
        # the process's calls also cost its members the caches they refill (`refill`)
        return compute + self._call_seconds(max(1.0, batch)) * (1 + self.cost.refill)

    def _in_group(self, unit: Unit, m: int, d: int) -> float:
        """How much more CPU member m takes in `unit` than in a hot loop of its own: in a
        one-thread group its calls run after the other members', whose weights took the
        core's caches (measured by the profile's rotation; 1 where it was not)."""
        if len(unit.members) < 2 or unit.threads > 1:
            return 1.0
        return self.problem.in_group.get((m, d), 1.0)

    def _member_cpu_seconds(self, m: int, d: int, batch: float, threads: int) -> float:
        """Core-seconds per sample of member m on CPU d at `batch` with `threads` threads. The
        profile measures one thread and all the cores: a thread count between them is charged
        its threads' cores at one thread's speed (what is not measured earns nothing)."""
        one_thread = interpolate(self.problem, self.problem.cpu_cost[m, d], batch)
        if threads <= 1:
            return one_thread / self._scaling(m, d, batch)
        if threads < (self.problem.devices[d].cores or 1):
            return threads * one_thread
        all_cores = interpolate(self.problem, self.problem.rate[m, d], batch, inverse=True)
        return threads * all_cores

    def _scaling(self, m: int, d: int, batch: float) -> float:
        """How much slower each one-thread instance runs at `batch` when every core runs one
        (the profile's instance curves on a CPU, between the batches they were measured at;
        1 without them)."""
        shares = self._shares.get((m, d))
        return 1.0 if shares is None else interpolate(self.problem, shares, batch)

    def _instance_shares(self) -> dict[tuple[int, int], np.ndarray]:
        """(member, device) -> per profiled batch, the share of its speed alone a one-thread
        instance keeps when every core runs one (NaN where no curve was measured)."""
        shares: dict[tuple[int, int], np.ndarray] = {}
        for (m, d, b), curve in self.problem.concurrent.items():
            if len(curve) >= 2:
                row = shares.setdefault((m, d), np.full(len(self.problem.batch_sizes), np.nan))
                row[b] = per_instance_share(curve, self.problem.devices[d].cores or 1)
        return shares

    def _gpu_rate_and_limit(self, unit: Unit, d: int, batch: float) -> tuple[float, float]:
        """Samples/s of the unit with all of GPU d's time, and the share of it its instances'
        processes can use at calls of `batch` requests (docs/SERVING.md)."""
        rate = gpu_rate(self.problem, unit, d)
        passed = gpu_instances_rate(self.problem, self._loaded, unit, d, batch)
        return rate, min(1.0, passed / rate)

    # ------------------------------------------------------------------ the LP

    def _solve(
        self,
        units: list[Unit],
        reached: list[float],
        overhead: float,
        spinners: dict[int, int],
        load: tuple[dict[int, float], float],
    ) -> Solved:
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
            return self._gpu_rate_and_limit(unit, d, batch)
        cores = device.cores or 1
        rate = cores / self._cpu_seconds(unit, d, batch)
        return rate, min(1.0, unit.counts[d] * max(1, unit.threads) / (sharing or cores))

    def _cores_of(self, d: int) -> int:
        return self.problem.devices[d].cores or 1

    def _device_count(self) -> int:
        return len(self.problem.devices)

    def _cpu_load(self, overhead: float) -> dict[int, float]:
        """Share of each CPU's time one ensemble sample per second takes for its request (the
        server's CPU: the first CPU device), with the members' refill that CPU costs."""
        for d, device in enumerate(self.problem.devices):
            if device.kind == "cpu":
                return {d: overhead * (1 + self.cost.refill) / (device.cores or 1)}
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
            return batch / gpu_instances_rate(self.problem, self._loaded, unit, d, batch)
        compute = batch * self._cpu_seconds(unit, d, batch) / max(1, unit.threads)
        return (compute + self._loaded.server_call_s) * stretch

    def _alone_latency_s(
        self, units: list[Unit], overhead: float, spinners: dict[int, int]
    ) -> float:
        """One request alone: its trip through the server, then all its units at once; a CPU
        runs at most `cores` of them at once, and fewer when spinning threads take their share
        of its cores. The trip is the serving cost's measured one where there is one (a request
        through the ensemble to a member that computes nothing, and one more request per unit
        beyond the first), the request's CPU seconds otherwise."""
        cost = self.cost
        if cost.path_s > 0:
            trip = cost.path_s + (len(units) - 1) * cost.request_s
            times = [self._alone_call_s(unit, work_only=True) for unit in units]
        else:
            trip, times = overhead, [self._alone_call_s(unit) for unit in units]
        if len(units) > 1 and self._cores > 1:  # the units' calls run at once, on every core
            times = [t / self._lone_share(unit) for t, unit in zip(times, units, strict=True)]
        spinning = spinners.get(self._server_cpu, 0)
        crowd = max(1.0, (spinning + len(times)) / self._cores) if spinning else 1.0
        return trip + max(max(times) * crowd, sum(times) / self._cores)

    def _alone_call_s(self, unit: Unit, work_only: bool = False) -> float:
        """Wall seconds of one lone one-sample call of `unit` (`work_only`: its members' work
        without the call's own cost, which the measured trip holds): a group whose members run
        side by side waits for the slowest (or their sum spread over the cores) and the
        hand-offs, not for all of them."""
        d = min(unit.counts)
        if not work_only:
            seconds = self._call_wall_s(unit, 1.0, 1.0)
        elif self.problem.devices[d].kind == "cpu":
            seconds = self._lone_work_s(unit, d)
        else:
            seconds = gpu_work_s(self.problem, unit, d, together=1)
        if unit.parallel_members:
            seconds -= parallel_members_saving_s(self.problem, unit.members, d)
        return seconds

    def _lone_share(self, unit: Unit) -> float:
        """The share of its lone speed a one-sample call of `unit` keeps while the other
        units' calls run on the other cores: its members' instance curves at batch 1,
        weighted by their lone calls (1 on a GPU, and for threads that take every core)."""
        d = min(unit.counts)
        if self.problem.devices[d].kind != "cpu" or unit.threads > 1:
            return 1.0
        alone = [self._lone_member_s(m, d, 1) for m in unit.members]
        slowed = [t / self._scaling(m, d, 1.0) for t, m in zip(alone, unit.members, strict=True)]
        return sum(alone) / sum(slowed) if sum(slowed) > 0 else 1.0

    def _lone_work_s(self, unit: Unit, d: int) -> float:
        """Wall seconds of the unit's members' work in a lone request's call on CPU d: a
        one-thread group's members as the profile timed them one after another, where it did."""
        in_group = [self.problem.lone_in_group.get((m, d)) for m in unit.members]
        if len(unit.members) > 1 and unit.threads <= 1 and None not in in_group:
            return sum(s for s in in_group if s is not None)
        return sum(self._lone_member_s(m, d, unit.threads) for m in unit.members)

    def _lone_member_s(self, m: int, d: int, threads: int) -> float:
        """Wall seconds of member m's part of a lone request's call on CPU d: measured cold
        where the profile did (a lone request finds the caches taken by other work), else its
        CPU seconds at batch 1 spread over its threads."""
        measured = self.problem.lone.get((m, d, max(1, threads)))
        if measured is not None:
            return measured
        return self._member_cpu_seconds(m, d, 1.0, threads) / max(1, threads)

    def _concurrency(self, units: list[Unit], reached: list[float]) -> int:
        """Requests in flight that keep the fullest unit's batches as they are: its instances'
        batches, and as many again on their way to it or back to their clients."""
        queued = max(sum(u.counts.values()) * b for u, b in zip(units, reached, strict=True))
        return max(1, math.ceil(IN_FLIGHT * queued))


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
