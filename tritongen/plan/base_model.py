"""The base planning model (docs/PLANNING.md): devices time-shared among the members placed on them.

Member m on a device d of class c processes at most `thr[m][c][b_m]` samples per second of
that device's time (on a CPU: one instance using all cores). The ensemble throughput of a
placement is the largest X such that every member gets X samples/s from its devices while each
device's time fractions sum to at most 1:

    maximise X  s.t.  Σ_d f[m,d]·thr[m,d] ≥ X  (every member m),
                      Σ_m f[m,d] ≤ 1           (every device d),
                      f ≥ 0,  f[m,d] = 0 where m has no instance on d.

Instance counts do not enter the LP (time is shared); they only cost memory. The LP's duals
name the bottleneck (the member whose constraint binds hardest) and price every device's time,
which the planner uses to skip moves that cannot help.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from tritongen.errors import PlanError
from tritongen.profile.profile import Profile, ProfileEntry
from tritongen.spec.devices import Inventory

EPS = 1e-9


@dataclass(frozen=True, eq=False)
class TimeSharing:
    """The solved LP: throughput, time fractions f[m, d] and the dual prices."""

    throughput: float
    fractions: np.ndarray  # [members, devices] share of each device's time
    member_prices: np.ndarray  # [members] ∂X/∂(demand of m); they sum to 1
    device_prices: np.ndarray  # [devices] ∂X/∂(time of d); they sum to X

    @property
    def bottleneck(self) -> int:
        """Index of the member whose extra capacity would raise X the most."""
        return int(np.argmax(self.member_prices))


def dual_bound(rates: np.ndarray, prices: np.ndarray) -> float:
    """An upper bound on the LP's X for `rates`, from rows of member prices (weak duality).

    Any prices u ≥ 0 summing to 1 give X ≤ Σ_d max_m rates[m, d]·u[m]. The prices of a
    nearby placement bound its neighbours tightly; a unit vector e_m gives member m's own
    capacity. The planner uses the smallest of several to skip neighbours cheaply.
    """
    weighted = rates[None, :, :] * prices[:, :, None]  # [rows, members, devices]
    return float(weighted.max(axis=1).sum(axis=1).min())


def solve_time_sharing(rates: np.ndarray) -> TimeSharing:
    """Solve the LP for `rates[m, d]` (samples/s of m on d's time; 0 where not placed)."""
    members, devices = rates.shape
    pairs = np.argwhere(rates > 0)
    unplaced = np.setdiff1d(np.arange(members), pairs[:, 0])
    if members == 0:
        return TimeSharing(0.0, np.zeros(rates.shape), np.zeros(0), np.zeros(devices))
    if unplaced.size:  # a member with no instance serves nothing: X = 0, and it is to blame
        prices = np.zeros(members)
        prices[unplaced[0]] = 1.0
        return TimeSharing(0.0, np.zeros(rates.shape), prices, np.zeros(devices))
    n = len(pairs)
    columns = np.arange(n)
    a_ub = np.zeros((members + devices, n + 1))
    a_ub[pairs[:, 0], columns] = -rates[pairs[:, 0], pairs[:, 1]]
    a_ub[members + pairs[:, 1], columns] = 1.0
    a_ub[:members, n] = 1.0
    b_ub = np.concatenate([np.zeros(members), np.ones(devices)])
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    if result.status != 0:  # cannot happen for a bounded, feasible LP; keep the message
        raise PlanError(f"the time-sharing LP failed: {result.message}")
    fractions = np.zeros(rates.shape)
    fractions[pairs[:, 0], pairs[:, 1]] = result.x[:n]
    marginals = -np.asarray(result.ineqlin.marginals)
    return TimeSharing(float(result.x[n]), fractions, marginals[:members], marginals[members:])


def upper_bound_rates(members: Iterable[str], inventory: Inventory, profile: Profile) -> np.ndarray:
    """Every member on every device its profile covers, at that class's fastest batch size;
    on a CPU, its cores running one-thread instances at the cheapest batch where the profile
    has one-thread costs (no instance can do better: threads scale sub-linearly)."""
    names = list(members)
    rates = np.zeros((len(names), len(inventory.devices)))
    for i, member in enumerate(names):
        for j, device in enumerate(inventory.devices):
            entries = profile.entries(member, device.device_class).values()
            # k instances together can beat one (the profile's instance curves)
            rates[i, j] = max(
                (max([e.throughput, *_curve(e)]) for e in entries),
                default=0.0,
            )
            one_thread = [
                e.extra["cpu_cost_s_per_sample"]
                for e in entries
                if "cpu_cost_s_per_sample" in e.extra
            ]
            if device.kind == "cpu" and one_thread:
                rates[i, j] = max(rates[i, j], (device.cores or 1) / min(one_thread))
    return rates


def _curve(entry: ProfileEntry) -> list[float]:
    return [float(v) for v in (entry.extra.get("concurrency") or {}).values()]


def upper_bound(members: Iterable[str], inventory: Inventory, profile: Profile) -> float:
    """The bound no plan can beat (docs/PLANNING.md): the LP with every member allowed on every
    device and memory ignored; on a CPU alone, cores / Σ_m c_m."""
    return solve_time_sharing(upper_bound_rates(members, inventory, profile)).throughput


def allocation_rates(
    allocation: Mapping[str, Mapping[str, int]],
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> tuple[list[str], np.ndarray]:
    """Member names and the rate matrix of a plan.json-style allocation."""
    names = list(allocation)
    device_ids = [d.id for d in inventory.devices]
    rates = np.zeros((len(names), len(device_ids)))
    for i, member in enumerate(names):
        for device_id, count in allocation[member].items():
            if count <= 0:
                continue
            entry = _entry(member, device_id, batch_size, inventory, profile)
            rates[i, device_ids.index(device_id)] = entry.throughput
    return names, rates


def base_solution(
    allocation: Mapping[str, Mapping[str, int]],
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> tuple[float, str | None]:
    """The base model's throughput of a plan and its bottleneck member."""
    names, rates = allocation_rates(allocation, batch_size, inventory, profile)
    solution = solve_time_sharing(rates)
    return solution.throughput, (names[solution.bottleneck] if names else None)


def base_throughput(
    allocation: Mapping[str, Mapping[str, int]],
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> float:
    """What an outside check recomputes from plan.json: the LP's X in samples/s."""
    return base_solution(allocation, batch_size, inventory, profile)[0]


def memory_used(
    allocation: Mapping[str, Mapping[str, int]],
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> dict[str, int]:
    """Bytes the planned instances take on each device."""
    used = {d.id: 0 for d in inventory.devices}
    for member, per_device in allocation.items():
        for device_id, count in per_device.items():
            if count > 0:
                entry = _entry(member, device_id, batch_size, inventory, profile)
                used[device_id] += count * entry.memory_bytes
    return used


def fits(
    allocation: Mapping[str, Mapping[str, int]],
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> bool:
    """True when the instances on every device fit its `memory_bytes`."""
    used = memory_used(allocation, batch_size, inventory, profile)
    return all(used[d.id] <= d.memory_bytes for d in inventory.devices)


def _entry(
    member: str,
    device_id: str,
    batch_size: Mapping[str, int],
    inventory: Inventory,
    profile: Profile,
) -> ProfileEntry:
    try:
        device = inventory[device_id]
    except KeyError:
        raise PlanError(f"{member}: device {device_id!r} is not in the inventory") from None
    batch = batch_size.get(member)
    entry = profile.entries(member, device.device_class).get(batch) if batch else None
    if entry is None:
        raise PlanError(
            f"{member}: the profile has no entry for class {device.device_class!r} at batch size "
            f"{batch}; profile it there or plan another batch size"
        )
    return entry
