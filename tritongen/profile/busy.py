"""The ensemble's members computing on every core, as a busy CPU plan keeps them: one spawned
process per core, each running every member's session (one intra-op thread) one after
another at the largest batch, until told to stop.

Served under load, tritonserver's threads, the Python-backend processes and a local client
share the cores with the members' compute, and each of their time slices starts with caches
the members took: the same request path costs more CPU than on idle cores. The serving cost
measures that with this work running beside its stand-in (`bench/serving_cost.py`,
docs/SERVING.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from typing import Any

from tritongen.errors import TritongenError
from tritongen.profile.profiler import input_feeds, member_batches, member_settings
from tritongen.profile.runtime import build_session
from tritongen.profile.tasks import Target
from tritongen.profile.worker import Job, describe_error, sample_inputs
from tritongen.spec.members import Ensemble

START_TIMEOUT_S = 120.0  # loading every member's session in each process
STOP_TIMEOUT_S = 10.0


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


@contextlib.contextmanager
def members_busy(jobs: dict[str, Job], processes: int) -> Iterator[None]:
    """Run `jobs` round and round in `processes` processes while the block runs; they have
    loaded their sessions and started before it does."""
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Queue()
    workers = [
        context.Process(target=busy_main, args=(jobs, stop, ready), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            failure = ready.get(timeout=START_TIMEOUT_S)
            if failure:
                raise TritongenError(f"the members' background work failed: {failure}")
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=STOP_TIMEOUT_S)
            if worker.is_alive():
                worker.kill()
                worker.join()


def busy_main(jobs: dict[str, Job], stop: Any, ready: Any) -> None:
    """Entry point of one background process: load every session that loads (a member that
    does not is reported by the profile, not here), say so, then run each member once at its
    job's batch, in turn, until `stop` is set."""
    import numpy as np

    rng, sessions, failures = np.random.default_rng(0), [], []
    for job in jobs.values():
        try:
            session = build_session(job.model_path, job.settings)
            sessions.append((session, sample_inputs(rng, job, job.batches[0])))
        except Exception as exc:
            failures.append(describe_error(exc))
    ready.put("" if sessions else "; ".join(failures) or "no member")
    if not sessions:
        return
    while not stop.is_set():
        for session, feed in sessions:
            session.run(None, feed)
