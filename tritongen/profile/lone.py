"""A group's rotation: each member's call as a group on a CPU makes it, every member one after
another in one process. At batch 1 after the process slept through the rest of a request's
trip, it is a lone request's; at the largest batch without a pause, a busy group's, timed in
as many processes as the CPU has cores, all rotating at once, as a group's instances do.

A member's calls in a hot loop keep its weights in the core's caches; in a group, the members
before it have taken them (and a lone request's process slept in between), so each call starts
colder, and in a busy group the other cores' instances, rotating through other members, share
the caches and the memory's bandwidth. The serving model charges a group these times
(docs/SERVING.md, *Latency* and *What one sample costs*).
Each spawned process loads every member's session (one intra-op thread, as a group serves
them); once all are ready they time the rotation at the jobs' batch together, and each member's
median over the processes is cached like a profile point.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tritongen.lifetime import end_with_spawning_parent
from tritongen.profile.cache import PointCache, PointKey
from tritongen.profile.runtime import build_session
from tritongen.profile.worker import (
    GroupLonePoint,
    Job,
    JobFailure,
    describe_error,
    expect_message,
    sample_inputs,
    stop_process,
    timed_calls,
)

START_TIMEOUT_S = 120.0  # loading every member's session and timing the rotation
ROTATION = "the rotation's process"  # who a message came from, in errors


def group_key(keys: Sequence[PointKey]) -> PointKey:
    """The cache key of a rotation: its members' one-thread keys at its batch, in order."""
    members = hashlib.sha256("|".join(k.sha256 for k in keys).encode()).hexdigest()
    shapes = "lone in group: " + "|".join(k.shapes for k in keys)
    first = keys[0]
    return replace(first, sha256=members, shapes=shapes, instances=len(keys))


def lone_in_group(
    jobs: dict[str, Job],
    gap_s: float,
    cache: PointCache,
    key: PointKey,
    use_cache: bool = True,
    processes: int = 1,
) -> dict[str, float]:
    """Each member's seconds per call in the rotation through the group of `jobs` (each a
    member's one-thread job at the rotation's batch, its first), a pause of `gap_s` before
    each round, `processes` rotating at once; from the cache or measured in fresh processes."""
    point_s = max(job.point_s for job in jobs.values())
    if processes > 1:
        key = replace(key, shapes=f"{key.shapes} in {processes} processes")
    if use_cache and (cached := cache.get(key, point_s, GroupLonePoint)) is not None:
        return cached.seconds
    found = _rotate_together(jobs, gap_s, processes, point_s)
    seconds = {name: float(statistics.median(f[name] for f in found)) for name in jobs}
    cache.put(key, GroupLonePoint(seconds, point_s))
    return seconds


def _rotate_together(
    jobs: dict[str, Job], gap_s: float, processes: int, point_s: float
) -> list[dict[str, float]]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    children = []
    try:
        for _ in range(processes):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=rotation_main, args=(jobs, gap_s, go, sender), daemon=True
            )
            process.start()
            sender.close()
            children.append((process, receiver))
        for _, receiver in children:
            expect_message(receiver, START_TIMEOUT_S, str, ROTATION)  # loaded, warmed up
        go.set()
        timeout_s = START_TIMEOUT_S + point_s
        return [expect_message(r, timeout_s, dict, ROTATION) for _, r in children]
    finally:
        for process, receiver in children:
            stop_process(process)
            receiver.close()


def rotation_main(jobs: dict[str, Job], gap_s: float, go: Any, conn: Any) -> None:
    """Entry point of a rotation's process: load every session, warm each up, say so, and
    once `go` is set time rounds of (sleep `gap_s`, every member once at its job's first
    batch) for about one point's time."""
    end_with_spawning_parent()
    try:
        import numpy as np

        rng = np.random.default_rng(0)
        sessions = {
            name: (
                build_session(job.model_path, job.settings),
                sample_inputs(rng, job, job.batches[0]),
            )
            for name, job in jobs.items()
        }
        for session, feed in sessions.values():
            timed_calls(session, feed, min_s=0.0, min_runs=3)
        conn.send("ready")
        go.wait()
        times: dict[str, list[float]] = {name: [] for name in sessions}
        point_s = max(job.point_s for job in jobs.values())
        min_runs = max(job.min_runs for job in jobs.values())
        start = time.perf_counter()
        while time.perf_counter() - start < point_s or len(times[next(iter(times))]) < min_runs:
            if gap_s > 0:
                time.sleep(gap_s)
            for name, (session, feed) in sessions.items():
                times[name] += timed_calls(session, feed, min_s=0.0, min_runs=1)
        conn.send({name: float(np.median(t)) for name, t in times.items()})
    except Exception as exc:
        conn.send(JobFailure(f"the rotation failed: {describe_error(exc)}"))
    finally:
        conn.close()
