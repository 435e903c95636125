"""The ensemble's members computing on every core, as a busy CPU plan keeps them: one spawned
process per core, each running every member's session (one intra-op thread) one after
another at the largest batch, until told to stop.

Served under load, tritonserver's threads, the Python-backend processes and a local client
share the cores with the members' compute, and each of their time slices starts with caches
the members took: the same request path costs more CPU than on idle cores. The serving cost
measures that with this work running beside its stand-in (`bench/serving_cost.py`,
docs/SERVING.md). The other way round too: each time slice the path takes, the members' next
one starts with caches the path took, so the members' runs cost more CPU beside it
(`BusyMembers.work`: each member's runs so far and the CPU they took).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tritongen.errors import TritongenError
from tritongen.lifetime import end_with_spawning_parent
from tritongen.profile.profiler import input_feeds, member_batches, member_settings
from tritongen.profile.runtime import build_session
from tritongen.profile.tasks import Target
from tritongen.profile.worker import Job, describe_error, sample_inputs, stop_process
from tritongen.spec.members import Ensemble

START_TIMEOUT_S = 120.0  # loading every member's session in each process


def busy_jobs(ensemble: Ensemble, batch: int) -> dict[str, Job]:
    """Each member's one-thread CPU job at `batch`, or the batch its model fixes."""
    cpu = Target(device_class="cpu", kind="cpu", threads=(1,))
    return {
        member.name: Job(
            model_path=str(member.served_file),
            inputs=input_feeds(ensemble, member),
            batches=member_batches(member, [batch])[0] or (member.max_batch_limit or batch,),
            settings=member_settings(cpu, 1, member),
        )
        for member in ensemble.members
    }


@dataclass(frozen=True)
class Work:
    """What the background processes have done so far, per member: the runs they finished and
    the CPU seconds those runs took (each timed by its own thread's CPU clock)."""

    runs: tuple[int, ...]
    cpu_s: tuple[float, ...]

    def minus(self, earlier: Work) -> Work:
        return Work(
            tuple(a - b for a, b in zip(self.runs, earlier.runs, strict=True)),
            tuple(a - b for a, b in zip(self.cpu_s, earlier.cpu_s, strict=True)),
        )

    def extra_cpu_s(self, alone: Work) -> float:
        """CPU seconds these runs took beyond what as many runs took in `alone` (members with
        no run in either are left out)."""
        extra = 0.0
        for runs, cpu_s, alone_runs, alone_cpu_s in zip(
            self.runs, self.cpu_s, alone.runs, alone.cpu_s, strict=True
        ):
            if runs > 0 and alone_runs > 0:
                extra += cpu_s - runs * alone_cpu_s / alone_runs
        return extra


class BusyMembers:
    """The running background processes' tallies: per process and member, runs and CPU."""

    def __init__(self, runs: list[Any], cpu_s: list[Any]) -> None:
        self._runs, self._cpu_s = runs, cpu_s

    def work(self) -> Work:
        """Every process's runs and CPU so far, per member (a run in progress counts neither)."""
        members = len(self._runs[0]) if self._runs else 0
        return Work(
            tuple(sum(int(r[m]) for r in self._runs) for m in range(members)),
            tuple(sum(float(c[m]) for c in self._cpu_s) for m in range(members)),
        )


@contextlib.contextmanager
def members_busy(jobs: dict[str, Job], processes: int) -> Iterator[BusyMembers]:
    """Run `jobs` round and round in `processes` processes while the block runs; they have
    loaded their sessions and started before it does."""
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Queue()
    runs = [context.Array("q", len(jobs), lock=False) for _ in range(processes)]
    cpu_s = [context.Array("d", len(jobs), lock=False) for _ in range(processes)]
    workers = [
        context.Process(target=busy_main, args=(jobs, stop, ready, (r, c)), daemon=True)
        for r, c in zip(runs, cpu_s, strict=True)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            failure = ready.get(timeout=START_TIMEOUT_S)
            if failure:
                raise TritongenError(f"the members' background work failed: {failure}")
        yield BusyMembers(runs, cpu_s)
    finally:
        stop.set()
        for worker in workers:
            stop_process(worker)


def busy_main(jobs: dict[str, Job], stop: Any, ready: Any, tally: tuple[Any, Any]) -> None:
    """Entry point of one background process: load every session that loads (a member that
    does not is reported by the profile, not here), say so, then run each member once at its
    job's batch, in turn, until `stop` is set, adding each run and its CPU seconds to `tally`
    (one intra-op thread: onnxruntime runs it on this thread)."""
    end_with_spawning_parent()
    import numpy as np

    rng, sessions, failures = np.random.default_rng(0), [], []
    for index, job in enumerate(jobs.values()):
        try:
            session = build_session(job.model_path, job.settings)
            sessions.append((index, session, sample_inputs(rng, job, job.batches[0])))
        except Exception as exc:
            failures.append(describe_error(exc))
    ready.put("" if sessions else "; ".join(failures) or "no member")
    if not sessions:
        return
    runs, cpu_s = tally
    while not stop.is_set():
        for index, session, feed in sessions:
            started = time.thread_time()
            session.run(None, feed)
            cpu_s[index] += time.thread_time() - started
            runs[index] += 1
