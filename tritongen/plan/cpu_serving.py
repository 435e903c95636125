"""How members placed on a CPU are served: single-threaded instances, as many per member as
its share of the cores, and the throughput that predicts.

The base model (docs/PLANNING.md) sees a CPU as one device whose time its members share, each member one
instance using all cores — how the profile measures it, not how a CPU serves best. onnxruntime
scales sub-linearly with threads, and every call through the Python backend costs CPU of its
own; independent single-threaded instances keep every core busy on useful work. A member that
needs a fraction f of a C-core CPU gets ceil(f·C) instances of one thread. On a CPU-only
machine the ensemble then runs at C / Σ_m s_m, s_m being member m's one-thread CPU seconds
per sample at its batch size plus the per-call overhead spread over the batch — which reaches
the CPU bound (docs/PLANNING.md) when batches are large.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tritongen.plan.base_model import allocation_rates, base_throughput, fits, solve_time_sharing
from tritongen.plan.plan import Plan
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory


def spread_on_cpus(plan: Plan, inventory: Inventory, profile: Profile) -> Plan:
    """`plan` with each member's CPU instances set to its share of the cores (rounded up), one
    thread each, at its cheapest batch size on the CPU. Placement (what the base model sees)
    is unchanged; if the extra instances do not fit in memory, `plan` is returned as it was."""
    batch_size = _cheapest_batches(plan, inventory, profile)
    shares = _core_shares(replace(plan, batch_size=batch_size), inventory, profile)
    allocation = {m: dict(devices) for m, devices in plan.allocation.items()}
    threads = dict(plan.threads)
    queue_delay_us = dict(plan.queue_delay_us)
    for (member, device_id), cores in shares.items():
        allocation[member][device_id] = max(1, math.ceil(cores - 1e-6))
        threads[member] = 1
        # A busy single-threaded instance lets requests queue on their own: waiting for a
        # fuller batch would only add latency.
        queue_delay_us[member] = 0
    if not fits(allocation, batch_size, inventory, profile):
        return plan
    spread = replace(
        plan,
        allocation=allocation,
        batch_size=batch_size,
        threads=threads,
        queue_delay_us=queue_delay_us,
        predicted_throughput=base_throughput(allocation, batch_size, inventory, profile),
    )
    predicted = served_cpu_throughput(spread, inventory, profile)
    if predicted is None:
        return spread
    return replace(spread, extra={**spread.extra, "cpu_serving_model": predicted})


def _core_shares(
    plan: Plan, inventory: Inventory, profile: Profile
) -> dict[tuple[str, str], float]:
    """Cores each (member, CPU) pair keeps busy: on a CPU-only plan X·s_m at the served
    model's X; otherwise the base LP's share of the device's time."""
    cpu = inventory.cpu
    if cpu is not None and _cpu_only(plan, cpu.id):
        seconds = _served_seconds(plan, inventory, profile)
        rate = (cpu.cores or 1) / sum(seconds.values())
        return {(m, cpu.id): rate * s for m, s in seconds.items()}
    names, rates = allocation_rates(plan.allocation, plan.batch_size, inventory, profile)
    fractions = solve_time_sharing(rates).fractions
    return {
        (member, device.id): fractions[m, d] * (device.cores or 1)
        for d, device in enumerate(inventory.devices)
        if device.kind == "cpu"
        for m, member in enumerate(names)
        if plan.allocation[member].get(device.id, 0) > 0
    }


def _cpu_only(plan: Plan, cpu_id: str) -> bool:
    return all(set(devices) == {cpu_id} for devices in plan.allocation.values())


def _served_seconds(plan: Plan, inventory: Inventory, profile: Profile) -> dict[str, float]:
    """Per member: one-thread CPU seconds per sample at its batch, plus its call overhead."""
    cpu = inventory.cpu
    assert cpu is not None
    return {
        m: _served_sample_seconds(profile, m, cpu.device_class, plan.batch_size[m], cpu.cores or 1)
        for m in plan.allocation
    }


def _served_sample_seconds(
    profile: Profile, member: str, device_class: str, batch: int, cores: int
) -> float:
    """One-thread compute per sample at `batch`, plus the served call's cost spread over it."""
    compute = one_thread_seconds(profile, member, device_class, batch, cores)
    return compute + profile.serving_cost.call_s(batch) / batch


def _cheapest_batches(plan: Plan, inventory: Inventory, profile: Profile) -> dict[str, int]:
    """For members served on the CPU alone, the profiled batch size with the fewest CPU
    seconds per sample once the per-call overhead is counted; others keep theirs."""
    cpu = inventory.cpu
    if cpu is None:
        return dict(plan.batch_size)
    chosen = dict(plan.batch_size)
    for member, devices in plan.allocation.items():
        if set(devices) != {cpu.id}:
            continue
        chosen[member] = min(
            profile.entries(member, cpu.device_class),
            key=lambda b: _served_sample_seconds(
                profile, member, cpu.device_class, b, cpu.cores or 1
            ),
        )
    return chosen


def served_cpu_throughput(plan: Plan, inventory: Inventory, profile: Profile) -> float | None:
    """Ensemble samples/s on a CPU-only plan: min(cores / (Σ s_m + r), min_m n_m / s_m), r
    being each request's own serving cost (wire, scheduler, combine step); None when a member
    is also on a GPU (the base model's LP covers those)."""
    cpu = inventory.cpu
    if cpu is None or not _cpu_only(plan, cpu.id):
        return None
    seconds = _served_seconds(plan, inventory, profile)
    per_request = profile.serving_cost.per_request_s
    total = (cpu.cores or 1) / (sum(seconds.values()) + per_request)
    return min(total, min(plan.allocation[m][cpu.id] / s for m, s in seconds.items()))


def one_thread_seconds(
    profile: Profile, member: str, device_class: str, batch: int, cores: int
) -> float:
    """CPU seconds per sample of one single-threaded instance at `batch`."""
    entry = profile.entries(member, device_class)[batch]
    if "cpu_cost_s_per_sample" in entry.extra:
        return float(entry.extra["cpu_cost_s_per_sample"])
    by_threads = entry.extra.get("throughput_by_threads", {})
    if "1" in by_threads:
        return 1.0 / float(by_threads["1"])
    return cores / entry.throughput  # all cores, perfectly parallel: the optimistic guess
