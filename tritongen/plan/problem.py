"""The search space of the planner: the problem as arrays, and one candidate allocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tritongen.errors import PlanError
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Device, Inventory


@dataclass(frozen=True, eq=False)
class Problem:
    """Members, devices and the profile as arrays indexed [member, device, batch]."""

    members: tuple[str, ...]
    devices: tuple[Device, ...]
    batch_sizes: tuple[int, ...]  # every batch size the profile knows, ascending
    rate: np.ndarray  # samples/s of one instance alone; 0 where the profile has no entry
    memory: np.ndarray  # bytes per instance; inf where the profile has no entry
    capacity: np.ndarray  # [devices] memory_bytes

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

    def with_count(self, m: int, d: int, delta: int) -> Candidate:
        row = list(self.counts[m])
        row[d] += delta
        return replace(self, counts=(*self.counts[:m], tuple(row), *self.counts[m + 1 :]))

    def with_batch(self, m: int, b: int) -> Candidate:
        return replace(self, batch=(*self.batch[:m], b, *self.batch[m + 1 :]))

    def with_threads(self, m: int, t: int) -> Candidate:
        return replace(self, threads=(*self.threads[:m], t, *self.threads[m + 1 :]))


def build_problem(
    members: Sequence[str],
    inventory: Inventory,
    profile: Profile,
    max_batch_size: int | None = None,
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
    shape = (len(members), len(inventory.devices), len(batch_sizes))
    rate, memory = np.zeros(shape), np.full(shape, np.inf)
    for i, member in enumerate(members):
        for j, device in enumerate(inventory.devices):
            for k, b in enumerate(batch_sizes):
                entry = profile.entries(member, device.device_class).get(b)
                if entry is not None and entry.throughput > 0:
                    rate[i, j, k], memory[i, j, k] = entry.throughput, entry.memory_bytes
    capacity = np.array([d.memory_bytes for d in inventory.devices], dtype=float)
    for i, member in enumerate(members):
        if not np.any(rate[i] > 0):
            raise PlanError(
                f"{member}: the profile has no throughput for it at batch size ≤ "
                f"{max_batch_size}; profile it or raise max_batch_size"
            )
    return Problem(tuple(members), inventory.devices, tuple(batch_sizes), rate, memory, capacity)


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
