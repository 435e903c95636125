"""Instance concurrency: the total throughput of k instances of a member together on one
device (k one-thread instances on a CPU; k instances on one GPU), k = 2, 4, ... up to the
device's cores (a CPU) or `GPU_INSTANCES` (a GPU).

One instance alone is the profile's entry; k instances together are not k times it: cores
share caches and memory bandwidth, a GPU's kernels from several processes overlap only in
part. The serving model reads these curves to price more instances. Each level starts k
fresh processes, lets every one load its session and warm up, then times them together.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from tritongen.profile.worker import (
    CONTENTION_LIMIT,
    RETRY_PAUSE_S,
    ConcurrencyPoint,
    Job,
    JobFailure,
    TogetherRun,
    describe_error,
    together_main,
)

GPU_INSTANCES = 4  # the most instances of one member a GPU is profiled with
START_TIMEOUT_S = 120.0  # loading and warming up one session

Measure = Callable[[Job, int, int], ConcurrencyPoint]


def instance_levels(kind: str, cores: int) -> list[int]:
    """The instance counts to measure beyond one: powers of two up to the cores (a CPU),
    and the cores themselves; 2..GPU_INSTANCES on a GPU."""
    if kind != "cpu":
        return list(range(2, GPU_INSTANCES + 1))
    levels = {2**i for i in range(1, cores.bit_length()) if 2**i <= cores}
    return sorted(levels | ({cores} if cores > 1 else set()))


def instances_together(job: Job, batch: int, instances: int) -> ConcurrencyPoint:
    """`instances` processes running `job`'s session at `batch`, timed together; timed again
    (once) when other processes kept them waiting for a core: k instances on k cores are
    what is measured, not k instances sharing them with someone else."""
    point, contention = _together_once(job, batch, instances)
    if contention > CONTENTION_LIMIT:
        time.sleep(RETRY_PAUSE_S)
        point, contention = min(
            [(point, contention), _together_once(job, batch, instances)], key=lambda pc: pc[1]
        )
    if contention > CONTENTION_LIMIT:
        raise RuntimeError(
            f"other processes held the cores ({contention:.0%} of the time waiting): "
            "profile again on a quieter machine"
        )
    return point


def _together_once(job: Job, batch: int, instances: int) -> tuple[ConcurrencyPoint, float]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    children = []
    try:
        for _ in range(instances):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=together_main, args=(job, batch, go, sender), daemon=True
            )
            process.start()
            sender.close()
            children.append((process, receiver))
        for _, receiver in children:
            _expect(receiver, START_TIMEOUT_S, str)
        go.set()
        results = [_expect(r, START_TIMEOUT_S + job.point_s, TogetherRun) for _, r in children]
    finally:
        for process, receiver in children:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            receiver.close()
    total = sum(r.calls * r.batch / r.elapsed_s for r in results)
    waits = [r.waited_s / r.elapsed_s for r in results if r.waited_s is not None]
    contention = sum(waits) / len(waits) if waits else 0.0
    return ConcurrencyPoint(batch, instances, total, job.point_s), contention


def _expect(receiver: Any, timeout_s: float, kind: type) -> Any:
    """The next message of one child, which must be of `kind`."""
    if not receiver.poll(timeout_s):
        raise RuntimeError(f"a instance run together sent nothing for {timeout_s:.0f} s")
    try:
        message = receiver.recv()
    except EOFError:
        raise RuntimeError("a instance run together died") from None
    if isinstance(message, JobFailure):
        raise RuntimeError(message.reason)
    if not isinstance(message, kind):
        raise RuntimeError(f"a instance run together sent {describe_error(RuntimeError(message))}")
    return message
