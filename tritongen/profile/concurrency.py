"""Instance curves: the total throughput of k instances of a member together on one device
(k one-thread instances on a CPU; k instances on one GPU, each its own process as Triton's
Python-backend instances are).

One instance alone is the profile's entry; k instances together are not k times it: cores
share caches and memory bandwidth, a GPU's kernels from several processes overlap only in
part. The serving model reads these curves to price more instances. Each level starts k
fresh processes, lets every one load its session and warm up at every batch asked for, then
times them together, one batch after another, all k starting each batch at once.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tritongen.lifetime import end_with_spawning_parent
from tritongen.profile.runtime import build_session
from tritongen.profile.worker import (
    CONTENTION_LIMIT,
    RETRY_PAUSE_S,
    ConcurrencyPoint,
    Job,
    JobFailure,
    describe_error,
    expect_message,
    run_queue_delay_s,
    sample_inputs,
    stop_process,
    timed_calls,
)

# The most instances of one member a GPU is profiled with: a bound on the search, never
# reached unless each level still pays (GPU_LEVEL_GAIN) and fits the GPU's memory.
GPU_MAX_INSTANCES = 8
# A level of instances on a GPU that raises no batch's total throughput by this share over
# the level below ends the curve: the GPU is saturated, and more instances would only take
# memory and host cores.
GPU_LEVEL_GAIN = 0.05
START_TIMEOUT_S = 120.0  # loading and warming up one session
TOGETHER = "an instance run together"  # who a message came from, in errors

Measure = Callable[[Job, Sequence[int], int], dict[int, ConcurrencyPoint]]


def instance_levels(kind: str, cores: int) -> list[int]:
    """The instance counts to measure beyond one: powers of two up to the cores (a CPU),
    and the cores themselves; 2, 3, ... GPU_MAX_INSTANCES on a GPU (the profiler stops
    where a level no longer pays)."""
    if kind != "cpu":
        return list(range(2, GPU_MAX_INSTANCES + 1))
    levels = {2**i for i in range(1, cores.bit_length()) if 2**i <= cores}
    return sorted(levels | ({cores} if cores > 1 else set()))


@dataclass(frozen=True)
class TogetherRun:
    """What one of k instances started together did in one batch's timed window."""

    batch: int
    calls: int
    elapsed_s: float
    waited_s: float | None  # time runnable but waiting for a core (None: unknown)


def instances_together(
    job: Job, batches: Sequence[int], instances: int
) -> dict[int, ConcurrencyPoint]:
    """`instances` processes running `job`'s session at each of `batches`, timed together;
    timed again (once) when other processes kept them waiting for a core: k instances on k
    cores are what is measured, not k instances sharing them with someone else."""
    points, contention = _together_once(job, batches, instances)
    if contention > CONTENTION_LIMIT:
        time.sleep(RETRY_PAUSE_S)
        again = _together_once(job, batches, instances)
        points, contention = min([(points, contention), again], key=lambda pc: pc[1])
    if contention > CONTENTION_LIMIT:
        raise RuntimeError(
            f"other processes held the cores ({contention:.0%} of the time waiting): "
            "profile again on a quieter machine"
        )
    return points


def _together_once(
    job: Job, batches: Sequence[int], instances: int
) -> tuple[dict[int, ConcurrencyPoint], float]:
    context = multiprocessing.get_context("spawn")
    go, barrier = context.Event(), context.Barrier(instances)
    children = []
    try:
        for _ in range(instances):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=together_main,
                args=(job, tuple(batches), go, barrier, sender),
                daemon=True,
            )
            process.start()
            sender.close()
            children.append((process, receiver))
        for _, receiver in children:
            expect_message(receiver, START_TIMEOUT_S, str, TOGETHER)
        go.set()
        runs = [
            expect_message(r, START_TIMEOUT_S + job.point_s, TogetherRun, TOGETHER)
            for _ in batches
            for _, r in children
        ]
    finally:
        for process, receiver in children:
            stop_process(process)
            receiver.close()
    points = {
        b: ConcurrencyPoint(
            b,
            instances,
            sum(r.calls * r.batch / r.elapsed_s for r in runs if r.batch == b),
            job.point_s,
        )
        for b in batches
    }
    waits = [r.waited_s / r.elapsed_s for r in runs if r.waited_s is not None]
    return points, (sum(waits) / len(waits) if waits else 0.0)


def together_main(job: Job, batches: tuple[int, ...], go: Any, barrier: Any, conn: Any) -> None:
    """Entry point of one of k processes started together: load the session, warm up at every
    batch, say so, wait for the others, then run each batch for `job.point_s` seconds (all k
    starting it at once) and report each."""
    end_with_spawning_parent()
    try:
        import numpy as np

        session = build_session(job.model_path, job.settings)
        rng = np.random.default_rng(0)
        feeds = {b: sample_inputs(rng, job, b) for b in batches}
        for feed in feeds.values():
            timed_calls(session, feed, min_s=job.point_s / 4, min_runs=3)
        conn.send("ready")
        go.wait()
        for batch, feed in feeds.items():
            barrier.wait(timeout=START_TIMEOUT_S)
            waited, start = run_queue_delay_s(), time.perf_counter()
            calls = len(timed_calls(session, feed, min_s=job.point_s, min_runs=1))
            elapsed, waited_after = time.perf_counter() - start, run_queue_delay_s()
            delay = None if waited is None or waited_after is None else waited_after - waited
            conn.send(TogetherRun(batch, calls, elapsed, delay))
    except Exception as exc:
        conn.send(JobFailure(f"run of instances together failed: {describe_error(exc)}"))
    finally:
        conn.close()
