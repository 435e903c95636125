"""What a profile measures: the device targets of this machine, the tasks (one child process
each) and the points that could not be measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tritongen.profile.worker import InputFeed, Job, Message
from tritongen.spec.members import MemberModel


@dataclass(frozen=True)
class Skipped:
    member: str
    device_class: str
    batch: int | None  # None: every batch of that class
    reason: str


@dataclass(frozen=True)
class Target:
    """A device class this machine can measure, and how."""

    device_class: str
    kind: Literal["cpu", "gpu"]
    threads: tuple[int, ...]  # the served thread count first; on a CPU also 1 (the CPU cost)
    gpu_index: int | None = None
    memory_bytes: int | None = None  # a GPU's: how many instances the curves may try


@dataclass(frozen=True)
class Task:
    """One child process's worth of work, before the cache is consulted."""

    member: MemberModel
    target: Target
    threads: int
    batches: tuple[int, ...]
    inputs: tuple[InputFeed, ...]


PointId = tuple[str, str, int, int]  # member, device class, threads, batch
Runner = Callable[[Job, Callable[[Message], None]], None]
