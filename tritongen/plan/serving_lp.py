"""The serving model's linear program: the largest ensemble throughput X such that every unit
gets X samples/s from the devices it is on, each device's time shared out (docs/SERVING.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from tritongen.errors import PlanError


@dataclass(frozen=True)
class Solved:
    throughput: float
    share: dict[tuple[int, int], float]  # (unit, device) -> share of the device's time
    binding: int  # the unit whose constraint binds hardest
    saturated: frozenset[int] = frozenset()  # units whose instances are busy all the time


def solve_units(
    n_units: int,
    n_devices: int,
    pairs: list[tuple[int, int]],
    rates: list[float],
    limits: list[float],
    request_load: dict[int, float],
    capacity: dict[int, float] | None = None,
) -> Solved:
    """maximise X: Σ_d rate·f ≥ X per unit, Σ_u f + load_d·X ≤ capacity_d (1 unless given) per
    device, 0 ≤ f ≤ limit."""
    capacity = capacity or {}
    devices = {d for _, d in pairs}
    loaded_elsewhere = any(load > 0 and d not in devices for d, load in request_load.items())
    if len(devices) == 1 and len(pairs) == n_units and not loaded_elsewhere:
        d = devices.pop()
        return _one_device(pairs, rates, limits, request_load.get(d, 0.0), capacity.get(d, 1.0))
    n = len(pairs)
    a_ub = np.zeros((n_units + n_devices, n + 1))
    for i, ((u, d), rate) in enumerate(zip(pairs, rates, strict=True)):
        a_ub[u, i] = -rate
        a_ub[n_units + d, i] = 1.0
    a_ub[:n_units, n] = 1.0
    for d, load in request_load.items():
        a_ub[n_units + d, n] = load
    b_ub = np.concatenate([np.zeros(n_units), [capacity.get(d, 1.0) for d in range(n_devices)]])
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    bounds = [(0.0, limit) for limit in limits] + [(0.0, None)]
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status != 0:
        raise PlanError(f"the serving model's LP failed: {result.message}")
    marginals = -np.asarray(result.ineqlin.marginals)
    share = {pair: float(result.x[i]) for i, pair in enumerate(pairs)}
    binding = int(np.argmax(marginals[:n_units]))
    return Solved(float(result.x[n]), share, binding, _saturated(pairs, share, limits))


def _saturated(
    pairs: list[tuple[int, int]], share: dict[tuple[int, int], float], limits: list[float]
) -> frozenset[int]:
    """The units that use every device they are on up to their limit: requests queue there."""
    units = {u for u, _ in pairs}
    for pair, limit in zip(pairs, limits, strict=True):
        if share[pair] < limit * (1 - 1e-6):
            units.discard(pair[0])
    return frozenset(units)


def _one_device(
    pairs: list[tuple[int, int]],
    rates: list[float],
    limits: list[float],
    load: float,
    capacity: float = 1.0,
) -> Solved:
    """The LP in closed form when every unit shares one device: its time split in proportion
    to each unit's seconds per sample, each unit also held to its own share limit."""
    seconds = [1.0 / r for r in rates]
    x = min(
        capacity / (sum(seconds) + load),
        *(lim / s for lim, s in zip(limits, seconds, strict=True)),
    )
    share = {pair: x * s for pair, s in zip(pairs, seconds, strict=True)}
    binding = max(range(len(pairs)), key=lambda i: seconds[i] / limits[i])
    return Solved(x, share, pairs[binding][0], _saturated(pairs, share, limits))
