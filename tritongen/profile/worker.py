"""What runs inside a profiling child process: one member, one device, one thread count.

The parent (`tritongen.profile.profiler`) starts one fresh process per job so that a member's allocator
(onnxruntime's arena, glibc's heap, a CUDA context) never pollutes another member's memory
figure. Inside the job, batch sizes run in ascending order: after batch b the process holds
what a fresh instance at batch b would hold (arenas keep their high-water mark, and b is the
largest batch seen so far), so the memory growth read after each batch is that batch's figure.

Timing runs in several rounds over all batch sizes, and each point's runs are pooled before
taking the median: a burst of load from another process on a shared machine then hits a
fraction of every point's runs instead of all runs of one point.

This module imports only numpy, psutil and the member's runtime (lazily: onnxruntime or torch,
`profile.runtime`) and, of tritongen, the numpy-only `spec.values`, so the child's baseline
memory is what a served instance would carry before its session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from tritongen.lifetime import end_with_spawning_parent
from tritongen.profile.runtime import SessionSettings, build_session, import_runtime
from tritongen.spec.values import Fill

# A round in which our threads waited for a core more than this share of the time was
# disturbed by other processes (a shared machine) and is timed again.
CONTENTION_LIMIT = 0.05
RETRY_PAUSE_S = 0.1
OUT_OF_MEMORY_HINTS = ("out of memory", "failed to allocate", "bad_alloc", "memoryerror")


@dataclass(frozen=True)
class InputFeed:
    """One input of the member and the values it is fed (spec/values.py)."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]  # per-sample dims, all concrete
    fill: Fill = field(default_factory=Fill)


@dataclass(frozen=True)
class Job:
    """One child process: a member on one device with one thread count, several batches."""

    model_path: str
    inputs: tuple[InputFeed, ...]
    batches: tuple[int, ...]  # ascending
    settings: SessionSettings
    kind: Literal["cpu", "gpu"] = "cpu"
    gpu_index: int | None = None
    point_s: float = 0.6  # timed seconds per batch size, spread over `rounds`
    rounds: int = 3
    min_runs: int = 9
    # > 0: also time batch 1 as a lone request meets it, each call after this long idle
    lone_gap_s: float = 0.0


@dataclass(frozen=True)
class Point:
    """The measurement of one batch size."""

    batch: int
    threads: int
    latency_s: float  # median seconds per call
    latency_p90_s: float
    spread: float  # interquartile range / median of the per-call times
    runs: int
    cpu_s_per_call: float  # process CPU seconds per call (all threads, spinning included)
    contention: float | None  # mean share of thread time spent waiting for a core
    retried_rounds: int  # rounds timed again because other processes disturbed them
    memory_bytes: int  # growth after loading the session and running this batch
    process_bytes: int  # resident set of the fresh process before the session (per instance)
    point_s: float  # the timed seconds asked for (a cached point is reused only if >= asked)
    lone_latency_s: float | None = None  # median seconds of a lone call (`lone_calls`)

    @property
    def throughput(self) -> float:
        return self.batch / self.latency_s


@dataclass(frozen=True)
class Failure:
    batch: int
    reason: str


@dataclass(frozen=True)
class Started:
    """Sent before each (round, batch): lets the parent move its progress bar and, if the
    child dies, know which batch killed it."""

    batch: int
    round: int


@dataclass(frozen=True)
class JobFailure:
    """The whole job failed (the model does not load, no CUDA provider, no NVML)."""

    reason: str


Message = Point | Failure | Started | JobFailure


class MemoryProbe(Protocol):
    def growth(self) -> int: ...


class ResidentMemory:
    """Growth of this process's resident set since the probe was made."""

    def __init__(self) -> None:
        self._baseline = _resident_bytes()

    def growth(self) -> int:
        return max(0, _resident_bytes() - self._baseline)


class GpuProcessMemory:
    """Device memory this process holds on one GPU, read through NVML (passed in).

    Before the session exists the process has no CUDA context and holds nothing, so the
    figure includes the context: a Python-backend instance is a process of its own and pays
    for one too. Where NVML hides our pid (containers), the device's growth stands in."""

    def __init__(self, nvml: Any, index: int, pid: int | None = None) -> None:
        self._nvml = nvml
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self._pid = os.getpid() if pid is None else pid
        self._baseline = self._device_used()

    def _device_used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def growth(self) -> int:
        for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            if process.pid == self._pid and process.usedGpuMemory is not None:
                return int(process.usedGpuMemory)
        return max(0, self._device_used() - self._baseline)


def run_job(job: Job, send: Callable[[Message], None], nvml: Any = None) -> None:
    """Measure every batch of `job`, sending one Point or Failure per batch."""
    import_runtime(job.settings)  # before the baseline: every instance pays for it
    process_bytes = _resident_bytes()
    try:
        probe = _memory_probe(job, nvml)
    except Exception as exc:
        send(JobFailure(f"cannot read GPU memory through NVML: {describe_error(exc)}"))
        return
    try:
        session = build_session(job.model_path, job.settings)
    except Exception as exc:
        what = "cannot start an onnxruntime session"
        if job.settings.runtime != "onnxruntime":
            what = f"cannot load the member with {job.settings.runtime}"
        send(JobFailure(f"{what}: {describe_error(exc)}"))
        return
    for batch, samples in _measure_rounds(job, session, probe, send).items():
        point = summarize(batch, job, samples, process_bytes)
        if batch == 1 and job.lone_gap_s > 0 and job.kind == "cpu":
            point = replace(point, lone_latency_s=lone_latency_s(session, samples.feed, job))
        send(point)


def lone_latency_s(session: Any, feed: dict[str, Any], job: Job) -> float:
    """The median seconds of a call made as a lone request makes it: the process slept
    `lone_gap_s` waiting for the request (the rest of its trip through the server) while other
    work took the core's cache, which is written over before each call. Back-to-back calls
    (the rounds) keep the member's weights and code in the cache and the core awake; served
    alone, a small member's call takes several times as long."""
    import numpy as np

    scribble = np.zeros(core_cache_bytes() // 8)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < job.point_s / job.rounds or len(times) < job.min_runs:
        time.sleep(job.lone_gap_s)
        scribble += 1.0
        before = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - before)
    return float(np.median(times))


def core_cache_bytes() -> int:
    """The largest cache private to one core (Linux sysfs: the level-2 cache on most CPUs);
    1 MiB where the kernel does not say."""
    sizes = {}
    for index in range(8):
        folder = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        try:
            with open(f"{folder}/level") as level, open(f"{folder}/size") as size:
                text = size.read().strip().upper()
                sizes[int(level.read())] = int(text.rstrip("KM")) * (
                    1 << 20 if text.endswith("M") else 1 << 10
                )
        except (OSError, ValueError):
            continue
    private = [v for k, v in sizes.items() if k <= 2]
    return max(private) if private else 1 << 20


@dataclass
class _Samples:
    """What the rounds gather for one batch size."""

    feed: dict[str, Any]
    wall_s: list[float] = field(default_factory=list)  # one per call
    cpu_s: float = 0.0  # process CPU time over all timed calls
    contention: list[float] = field(default_factory=list)  # one per kept round
    retries: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True)
class _Round:
    wall_s: list[float]
    cpu_s: float
    elapsed_s: float
    contention: float | None  # share of our threads' time spent waiting for a core


@dataclass
class _RetryBudget:
    """Seconds a job may spend re-timing disturbed rounds: bounded, so a machine that stays
    busy costs at most twice the planned time instead of stalling the profile."""

    left_s: float

    def take(self, seconds: float) -> bool:
        if self.left_s < seconds:
            return False
        self.left_s -= seconds
        return True


def _measure_rounds(
    job: Job, session: Any, probe: MemoryProbe, send: Callable[[Message], None]
) -> dict[int, _Samples]:
    import numpy as np

    rng = np.random.default_rng(0)
    samples = {b: _Samples(sample_inputs(rng, job, b)) for b in job.batches}
    budget = _RetryBudget(job.point_s * len(job.batches))
    for round_ in range(job.rounds):
        for batch in [b for b in job.batches if b in samples]:
            send(Started(batch, round_))
            try:
                _quiet_round(session, samples[batch], job, round_, budget)
            except Exception as exc:
                del samples[batch]
                send(Failure(batch, run_failure(batch, exc)))
                continue
            if round_ == 0:  # ascending, so the high-water mark so far belongs to this batch
                samples[batch].memory_bytes = probe.growth()
    return samples


def _quiet_round(
    session: Any, samples: _Samples, job: Job, round_: int, budget: _RetryBudget
) -> None:
    """Time one round into `samples`; while other processes kept our threads waiting for a
    core, pause and time it again (within the budget): the profile wants one instance alone."""
    attempt = _time_round(session, samples.feed, job, first=round_ == 0)
    while _disturbed(attempt) and budget.take(attempt.elapsed_s + RETRY_PAUSE_S):
        samples.retries += 1
        time.sleep(RETRY_PAUSE_S)
        attempt = _time_round(session, samples.feed, job, first=False)
    _add_round(samples, attempt)


def _disturbed(round_: _Round) -> bool:
    return round_.contention is not None and round_.contention > CONTENTION_LIMIT


def _add_round(samples: _Samples, round_: _Round) -> None:
    samples.wall_s += round_.wall_s
    samples.cpu_s += round_.cpu_s
    if round_.contention is not None:
        samples.contention.append(round_.contention)


def _resident_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _memory_probe(job: Job, nvml: Any) -> MemoryProbe:
    if job.kind == "cpu":
        return ResidentMemory()
    return GpuProcessMemory(nvml or _started_nvml(), job.gpu_index or 0)


def _started_nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def sample_inputs(rng: Any, job: Job, batch: int) -> dict[str, Any]:
    """A feed of `batch` rows for every input (ones for masks: zeros there give NaN)."""
    return {f.name: f.fill.sample(rng, f.dtype, (batch, *f.shape)) for f in job.inputs}


def _time_round(session: Any, feed: dict[str, Any], job: Job, first: bool) -> _Round:
    """Warm up (longer in the first round: allocations, caches), then time single calls.

    Process CPU time and the run-queue delay are read around the whole loop, not per call
    (each read is a syscall). With one intra-op thread the CPU time is the core-seconds per
    call even when other processes take the core away, which wall time is not."""
    warm_s = job.point_s / 4 if first else 0.0
    timed_calls(session, feed, min_s=warm_s, min_runs=3 if first else 1)
    per_round_runs = -(-job.min_runs // job.rounds)
    delay_before, cpu_before = run_queue_delay_s(), time.process_time()
    start = time.perf_counter()
    wall = timed_calls(session, feed, job.point_s / job.rounds, per_round_runs)
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_before
    delay_after = run_queue_delay_s()
    contention = None
    if delay_before is not None and delay_after is not None:
        threads = max(1, job.settings.intra_op_threads)
        contention = (delay_after - delay_before) / elapsed / threads
    return _Round(wall, cpu_s, elapsed, contention)


def run_queue_delay_s() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a core (Linux
    schedstat); None where the kernel does not say."""
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def timed_calls(session: Any, feed: dict[str, Any], min_s: float, min_runs: int) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while True:
        before = time.perf_counter()
        session.run(None, feed)
        after = time.perf_counter()
        times.append(after - before)
        if after - start >= min_s and len(times) >= min_runs:
            return times


def summarize(batch: int, job: Job, samples: _Samples, process_bytes: int) -> Point:
    import numpy as np

    q1, median, q3, p90 = np.percentile(samples.wall_s, [25, 50, 75, 90])
    return Point(
        batch=batch,
        threads=job.settings.intra_op_threads,
        latency_s=float(median),
        latency_p90_s=float(p90),
        spread=float((q3 - q1) / median),
        runs=len(samples.wall_s),
        cpu_s_per_call=samples.cpu_s / len(samples.wall_s),
        contention=float(np.mean(samples.contention)) if samples.contention else None,
        retried_rounds=samples.retries,
        memory_bytes=samples.memory_bytes,
        process_bytes=process_bytes,
        point_s=job.point_s,
    )


def run_failure(batch: int, exc: BaseException) -> str:
    text = describe_error(exc)
    if isinstance(exc, MemoryError) or any(h in text.lower() for h in OUT_OF_MEMORY_HINTS):
        return f"out of memory at batch {batch}: {text}"
    return f"cannot run at batch {batch}: {text}"


def describe_error(exc: BaseException) -> str:
    """onnxruntime's messages are long and multi-line; keep the first line, bounded."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass(frozen=True)
class ConcurrencyPoint:
    """k instances of a member together on one device: their total samples/s."""

    batch: int
    instances: int
    throughput: float
    point_s: float


@dataclass(frozen=True)
class GroupLonePoint:
    """Each member's median seconds in a lone request's rotation through a group
    (`profile.lone`), and the seconds timed."""

    seconds: dict[str, float]
    point_s: float


def expect_message(receiver: Any, timeout_s: float, kind: type, sender: str) -> Any:
    """The next message from a child process (`sender` names it in errors), which must be of
    `kind`; a JobFailure it sends is raised."""
    if not receiver.poll(timeout_s):
        raise RuntimeError(f"{sender} sent nothing for {timeout_s:.0f} s")
    try:
        message = receiver.recv()
    except EOFError:
        raise RuntimeError(f"{sender} died") from None
    if isinstance(message, JobFailure):
        raise RuntimeError(message.reason)
    if not isinstance(message, kind):
        raise RuntimeError(f"{sender} sent {describe_error(RuntimeError(message))}")
    return message


def stop_process(process: Any) -> None:
    """Wait a little for a child process that has said all it will, then kill it."""
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join()


def child_main(job: Job, conn: Any) -> None:
    """Entry point of the spawned process: stream messages, then close the pipe. Anything
    unexpected goes back as a JobFailure rather than a traceback over the progress bar."""
    end_with_spawning_parent()
    try:
        run_job(job, conn.send)
    except Exception as exc:
        conn.send(JobFailure(f"profiling failed: {type(exc).__name__}: {describe_error(exc)}"))
    finally:
        conn.close()
