"""The search space of the planner: the problem as arrays, and one candidate allocation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from tritongen.errors import PlanError
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Device, Inventory


class Shape(str, Enum):
    """How the members placed on a CPU may be served: each alone, together in one model, or
    whichever the serving model predicts faster."""

    auto = "auto"
    separate = "separate"
    grouped = "grouped"


@dataclass(frozen=True, eq=False)
class Problem:
    """Members, devices and the profile as arrays indexed [member, device, batch]."""

    members: tuple[str, ...]
    devices: tuple[Device, ...]
    batch_sizes: tuple[int, ...]  # every batch size the profile knows, ascending
    rate: np.ndarray  # samples/s of one instance alone; 0 where the profile has no entry
    memory: np.ndarray  # bytes per instance; inf where the profile has no entry
    capacity: np.ndarray  # [devices] memory_bytes
    # CPU devices: one-thread CPU seconds per sample (NaN elsewhere or where not measured).
    cpu_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    # [member, device, batch] -> total samples/s of k = 1, 2, ... instances together on
    # one device (one-thread instances on a CPU), where the profile measured it.
    concurrent: dict[tuple[int, int, int], tuple[float, ...]] = field(default_factory=dict)
    shape: Shape = Shape.auto
    # GPU devices: host CPU seconds per sample one instance's calls take (launching kernels,
    # waiting for them, copies); 0 where the profile does not say.
    host_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    # CPU devices: (member, device, threads) -> wall seconds of the call a lone one-sample
    # request makes, where the profile measured it (cold: docs/SERVING.md, *Latency*).
    lone: dict[tuple[int, int, int], float] = field(default_factory=dict)
    # (member, device) -> the same call when the member runs in a group, after the others
    lone_in_group: dict[tuple[int, int], float] = field(default_factory=dict)
    # (member, device) -> how much more CPU per sample the member takes in a group, run after
    # the others, than in hot loops of its own: measured at the largest batch they share, on
    # every core at once
    in_group: dict[tuple[int, int], float] = field(default_factory=dict)
    # Whether the planner may run a group's members in parallel threads (opt-in: what that
    # costs throughput under load is not in the serving model, docs/SERVING.md).
    parallel_members: bool = False

    def allowed(self, m: int, d: int, b: int) -> bool:
        return bool(self.rate[m, d, b] > 0)

    def member_memory(self, candidate: Candidate) -> np.ndarray:
        """[members, devices] bytes each member's instances take on each device."""
        counts = np.asarray(candidate.counts)
        per_instance = self.memory[np.arange(len(self.members)), :, list(candidate.batch)]
        return counts * np.where(counts > 0, per_instance, 0.0)

    def free_memory(self, candidate: Candidate) -> np.ndarray:
        return self.capacity - self.member_memory(candidate).sum(axis=0)

    def fits(self, candidate: Candidate) -> bool:
        return bool(np.all(self.free_memory(candidate) >= 0))

    def group_batch_size(self, candidate: Candidate, d: int) -> int:
        """The batch size the group on device d forms (the largest profiled unless set)."""
        index = candidate.group_batch[d] if candidate.group_batch else -1
        return self.batch_sizes[index]

    def group_members(self, candidate: Candidate, d: int) -> list[int]:
        """The members a grouped device d serves in one model: those placed on d alone. Empty
        when d is not grouped or fewer than two members qualify (one is served alone)."""
        if not candidate.grouped or not candidate.grouped[d]:
            return []
        alone = [
            m
            for m, row in enumerate(candidate.counts)
            if row[d] > 0 and sum(n > 0 for n in row) == 1
        ]
        return alone if len(alone) > 1 else []

    def normalize(self, candidate: Candidate) -> Candidate:
        """Every member of a group with the group's instance count (the largest of theirs)."""
        for d in range(len(self.devices)):
            members = self.group_members(candidate, d)
            if not members:
                continue
            n = max(candidate.counts[m][d] for m in members)
            for m in members:
                candidate = candidate.with_count(m, d, n - candidate.counts[m][d])
        return candidate

    def rates(self, candidate: Candidate) -> np.ndarray:
        """[members, devices] LP rates: the profile's throughput where an instance is placed."""
        counts = np.asarray(candidate.counts)
        per_member = self.rate[np.arange(len(self.members)), :, list(candidate.batch)]
        return np.where(counts > 0, per_member, 0.0)


@dataclass(frozen=True)
class Candidate:
    """One point of the search: instances per (member, device), batch size and threads."""

    counts: tuple[tuple[int, ...], ...]  # [member][device] instances
    batch: tuple[int, ...]  # [member] index into Problem.batch_sizes (shared by its instances)
    threads: tuple[int, ...]  # [member] intra-op threads per CPU instance; 0 = derive
    # [device] True: the members placed on this device alone are served in one model.
    grouped: tuple[bool, ...] = ()
    # [device] the batch a group's batcher forms (index into Problem.batch_sizes; -1: largest)
    group_batch: tuple[int, ...] = ()
    # [device] whether a group runs its members in parallel; empty: where it pays (a plan as
    # written says it)
    parallel_members: tuple[bool, ...] = ()

    def with_count(self, m: int, d: int, delta: int) -> Candidate:
        row = list(self.counts[m])
        row[d] += delta
        return replace(self, counts=(*self.counts[:m], tuple(row), *self.counts[m + 1 :]))

    def with_batch(self, m: int, b: int) -> Candidate:
        return replace(self, batch=(*self.batch[:m], b, *self.batch[m + 1 :]))

    def with_threads(self, m: int, t: int) -> Candidate:
        return replace(self, threads=(*self.threads[:m], t, *self.threads[m + 1 :]))

    def with_group_batch(self, d: int, b: int) -> Candidate:
        sizes = list(self.group_batch or (-1,) * len(self.counts[0]))
        sizes[d] = b
        return replace(self, group_batch=tuple(sizes))

    def with_grouped(self, d: int, grouped: bool) -> Candidate:
        flags = list(self.grouped or (False,) * len(self.counts[0]))
        flags[d] = grouped
        return replace(self, grouped=tuple(flags))


def build_problem(
    members: Sequence[str],
    inventory: Inventory,
    profile: Profile,
    max_batch_size: int | None = None,
    shape: Shape = Shape.auto,
    parallel_members: bool = False,
) -> Problem:
    """Arrays of the profile over the inventory; a member no device can take is a PlanError."""
    _check_profile_covers(members, inventory, profile)
    batch_sizes = sorted(
        {
            b
            for m in members
            for d in inventory.devices
            for b in profile.entries(m, d.device_class)
            if max_batch_size is None or b <= max_batch_size
        }
    )
    if not batch_sizes:
        raise PlanError(f"the profile has no batch size ≤ max_batch_size={max_batch_size}")
    dims = (len(members), len(inventory.devices), len(batch_sizes))
    rate, memory, cpu_cost = np.zeros(dims), np.full(dims, np.inf), np.full(dims, np.nan)
    concurrent: dict[tuple[int, int, int], tuple[float, ...]] = {}
    host_cost = np.zeros(dims)
    lone: dict[tuple[int, int, int], float] = {}
    lone_in_group: dict[tuple[int, int], float] = {}
    in_group: dict[tuple[int, int], float] = {}
    for (i, j, k), entry in _entries(members, inventory, profile, batch_sizes):
        if batch_sizes[k] == 1:
            for threads, seconds in entry.extra.get("lone_latency_s_by_threads", {}).items():
                lone[i, j, int(threads)] = float(seconds)
            if "lone_latency_s_in_group" in entry.extra:
                lone_in_group[i, j] = float(entry.extra["lone_latency_s_in_group"])
        rate[i, j, k], memory[i, j, k] = entry.throughput, entry.memory_bytes
        host_cost[i, j, k] = float(entry.extra.get("host_cpu_s_per_sample", 0.0))
        cpu_cost[i, j, k] = one_thread_seconds(entry, inventory.devices[j])
        if "cpu_cost_s_per_sample_in_group" in entry.extra and cpu_cost[i, j, k] > 0:
            # the rotation ran on every core at once: compared with hot loops on every core
            share = per_instance_share(
                concurrency_curve(entry.extra.get("concurrency", {})),
                inventory.devices[j].cores or 1,
            )
            hot_loops = cpu_cost[i, j, k] / share
            # Below 1 is the two measurements' noise, not a finding: a member's hot loop keeps
            # its own weights in the caches, the best a rotation through others can do.
            rotation = float(entry.extra["cpu_cost_s_per_sample_in_group"])
            in_group[i, j] = max(1.0, rotation / hot_loops)
        if "concurrency" in entry.extra:
            concurrent[i, j, k] = concurrency_curve(entry.extra["concurrency"])
    capacity = np.array([d.memory_bytes for d in inventory.devices], dtype=float)
    for i, member in enumerate(members):
        if not np.any(rate[i] > 0):
            raise PlanError(
                f"{member}: the profile has no throughput for it at batch size ≤ "
                f"{max_batch_size}; profile it or raise max_batch_size"
            )
    return Problem(
        tuple(members),
        inventory.devices,
        tuple(batch_sizes),
        rate,
        memory,
        capacity,
        cpu_cost,
        concurrent,
        Shape(shape),
        host_cost=host_cost,
        lone=lone,
        lone_in_group=lone_in_group,
        in_group=in_group,
        parallel_members=parallel_members,
    )


def _entries(
    members: Sequence[str], inventory: Inventory, profile: Profile, batch_sizes: Sequence[int]
) -> Iterator[tuple[tuple[int, int, int], ProfileEntry]]:
    for i, member in enumerate(members):
        for j, device in enumerate(inventory.devices):
            by_batch = profile.entries(member, device.device_class)
            for k, b in enumerate(batch_sizes):
                if b in by_batch and by_batch[b].throughput > 0:
                    yield (i, j, k), by_batch[b]


def one_thread_seconds(entry: ProfileEntry, device: Device) -> float:
    """CPU seconds per sample of one single-threaded instance (NaN on a GPU): measured, else
    from the one-thread throughput, else all cores perfectly parallel (the optimistic guess)."""
    if device.kind != "cpu":
        return float("nan")
    if "cpu_cost_s_per_sample" in entry.extra:
        return float(entry.extra["cpu_cost_s_per_sample"])
    by_threads = entry.extra.get("throughput_by_threads", {})
    if "1" in by_threads:
        return 1.0 / float(by_threads["1"])
    return (device.cores or 1) / entry.throughput


def concurrency_curve(data: dict[str, float]) -> tuple[float, ...]:
    """{"1": x1, "2": x2, "4": x4, ...} -> (x1, x2, x3, x4, ...): total samples/s of k = 1, 2,
    ... instances together, up to the largest k measured. The profiler measures k = 1, 2, 4,
    8, ... and the cores; a k between two measured ones is interpolated linearly between them."""
    measured = sorted((int(k), float(x)) for k, x in data.items() if k.isdigit() and int(k) > 0)
    if not measured or measured[0][0] != 1:
        return ()  # without one instance alone there is nothing to compare k with
    ks, xs = zip(*measured, strict=True)
    return tuple(float(x) for x in np.interp(np.arange(1, ks[-1] + 1), ks, xs))


def per_instance_share(curve: tuple[float, ...], cores: int) -> float:
    """The share of its speed alone one one-thread instance keeps when every core runs one
    (an instance curve; 1 without one)."""
    if len(curve) < 2:
        return 1.0
    k = min(cores, len(curve))
    return min(1.0, curve[k - 1] / (k * curve[0]))


def _check_profile_covers(members: Sequence[str], inventory: Inventory, profile: Profile) -> None:
    for member in members:
        if member not in profile.members:
            raise PlanError(f"{member}: not in the profile; run `tritongen profile` for it")
        classes = set(profile.members[member])
        if not any(profile.entries(member, d.device_class) for d in inventory.devices):
            raise PlanError(
                f"{member}: the profile covers device classes {sorted(classes)} but the "
                f"inventory has {inventory.classes}; profile it on one of those"
            )
