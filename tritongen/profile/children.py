"""Profiling jobs in child processes: each job runs in a fresh spawned process, one after the
other, its messages streamed back to a progress bar; a child that dies or stalls costs only
the batches it had not measured."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from tritongen.profile.tasks import Runner, Skipped, Task
from tritongen.profile.worker import (
    Failure,
    Job,
    JobFailure,
    Message,
    Point,
    Started,
    child_main,
    stop_process,
)

SILENCE_LIMIT_S = 300.0  # a child that sends nothing for this long is stuck: stop it


def measure(
    jobs: Sequence[tuple[Task, Job]], runner: Runner, progress: bool
) -> tuple[list[dict[int, Point]], list[Skipped]]:
    """Run each job (one child process each), one after the other: two would share the cores
    and slow each other down. Returns each job's points by batch, and what failed."""
    results: list[dict[int, Point]] = []
    skipped: list[Skipped] = []
    total = sum(len(job.batches) * job.rounds for _, job in jobs)
    with _progress_bar(progress, total) as advance:
        for task, job in jobs:
            collector = _JobCollector(task, job, advance)
            runner(job, collector.receive)
            results.append(collector.points)
            skipped += collector.skipped()
    return results, skipped


class _JobCollector:
    """Gathers one job's messages as they stream in."""

    def __init__(self, task: Task, job: Job, advance: Callable[[str], None]) -> None:
        self.task, self.job, self.advance = task, job, advance
        self.points: dict[int, Point] = {}
        self.failures: dict[int, str] = {}
        self.job_failure = "the worker sent no result"

    def receive(self, message: Message) -> None:
        if isinstance(message, Started):
            member, target = self.task.member.name, self.task.target.device_class
            threads = f"{self.task.threads} thread{'s' * (self.task.threads > 1)}"
            self.advance(f"{member} · {target} · batch {message.batch} · {threads}")
        elif isinstance(message, Point):
            self.points[message.batch] = message
        elif isinstance(message, Failure):
            self.failures[message.batch] = message.reason
        elif isinstance(message, JobFailure):
            self.job_failure = message.reason

    def skipped(self) -> list[Skipped]:
        prefix = "" if self.task.threads == self.task.target.threads[0] else "1-thread run: "
        return [
            Skipped(
                self.task.member.name,
                self.task.target.device_class,
                batch,
                prefix + self.failures.get(batch, self.job_failure),
            )
            for batch in self.job.batches
            if batch not in self.points
        ]


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich bar on stderr, advanced once per (member, device, batch, round); only on a
    terminal, and gone when done, so that piped output and error lines stay clean."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or total == 0 or not console.is_terminal:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeElapsedColumn(), console=console, refresh_per_second=4, transient=True
    ) as bar:
        task = bar.add_task("profiling", total=total)
        yield lambda text: bar.update(task, advance=1, description=text)


def run_in_child(
    job: Job, on_message: Callable[[Message], None], *, target: Callable[..., None] = child_main
) -> None:
    """Run `job` in a fresh spawned process, passing its messages on as they arrive.

    If the process dies (the out-of-memory killer, a crash in native code) or stalls, the
    batch it was running and the larger ones are reported failed, and the smaller ones are
    measured again in a new process, so a profile keeps everything that can be measured.
    `target(job, connection)` is what the child runs (tests pass one that misbehaves)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(job, sender), daemon=True)
    process.start()
    sender.close()  # so that recv() sees EOF once the child has gone
    reported: set[int] = set()
    current: int | None = None
    stalled = False
    try:
        while True:
            if not receiver.poll(SILENCE_LIMIT_S):
                stalled = True
                break
            try:
                message = receiver.recv()
            except EOFError:
                break
            if isinstance(message, Started):
                current = message.batch
            elif isinstance(message, Point | Failure):
                reported.add(message.batch)
            on_message(message)
    finally:
        stop_process(process)
        receiver.close()
    if stalled or process.exitcode != 0:
        reason = _death_reason(process, stalled)
        _report_death(job, on_message, reported, current, reason, target)


def _death_reason(process: Any, stalled: bool) -> str:
    if stalled:
        return f"the worker sent nothing for {SILENCE_LIMIT_S:.0f} s and was stopped"
    code = process.exitcode
    if code == -signal.SIGKILL:
        return "the worker was killed (SIGKILL), most likely out of memory"
    if code is not None and code < 0:
        return f"the worker died of {signal.Signals(-code).name}"
    return f"the worker exited with code {code}"


def _report_death(
    job: Job,
    on_message: Callable[[Message], None],
    reported: set[int],
    current: int | None,
    reason: str,
    target: Callable[..., None],
) -> None:
    if current is None:
        on_message(JobFailure(reason + " before it ran a batch"))
        return
    unreported = [b for b in job.batches if b not in reported]
    for batch in (b for b in unreported if b >= current):
        on_message(Failure(batch, f"{reason} at batch {current}"))
    smaller = tuple(b for b in unreported if b < current)
    if smaller:
        run_in_child(replace(job, batches=smaller), on_message, target=target)


# ---------------------------------------------------------------------------- the result
