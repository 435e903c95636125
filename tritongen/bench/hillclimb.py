"""tritongen's own re-implementation of Model Analyzer's quick-search method, as a baseline
for what tuning by measurement costs. It is not Model Analyzer: `benchmarks/model_analyzer.py`
runs the real one (triton-model-analyzer from PyPI) against the embedded server.

Model Analyzer's quick search tunes an ensemble by a hill climb over each composing model's
instance count and max batch size (dynamic batching on, at its defaults), measuring every
candidate it visits with perf_analyzer. This follows that method on our measured evaluator:
start at one instance and batch 1 for every member, measure every neighbour (one member's
instance count ±1 or batch size ×2 / ÷2), move to the best, stop when no neighbour improves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tritongen.errors import TritongenError
from tritongen.plan.plan import Plan, even_threads
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble

MAX_INSTANCES = 5  # Model Analyzer's default max_instance_count

Point = tuple[tuple[int, int], ...]  # per member: (instances, log2 batch size)


@dataclass
class ClimbResult:
    best_plan: Plan
    best_throughput: float
    measurements: int
    seconds: float
    path: list[tuple[Point, float]] = field(default_factory=list)


def hill_climb(
    ensemble: Ensemble,
    inventory: Inventory,
    measure: Callable[[Plan], float],
    *,
    max_measurements: int = 60,
) -> ClimbResult:
    started = time.perf_counter()
    cpu = inventory.cpu
    if cpu is None:
        raise TritongenError("the hill climb places members on the CPU; the inventory has none")
    max_log_batch = ensemble.spec.max_batch_size.bit_length() - 1
    seen: dict[Point, float] = {}

    def score(point: Point) -> float:
        if point not in seen:
            seen[point] = measure(to_plan(ensemble, cpu.id, cpu.cores or 1, point))
        return seen[point]

    current: Point = tuple((1, 0) for _ in ensemble.members)
    path = [(current, score(current))]
    while len(seen) < max_measurements:
        candidates = [p for p in neighbours(current, max_log_batch) if len(seen) < max_measurements]
        scored = [(score(p), p) for p in candidates]
        best_score, best = max(scored, default=(0.0, current))
        if best_score <= seen[current]:
            break
        current = best
        path.append((current, best_score))
    return ClimbResult(
        best_plan=to_plan(ensemble, cpu.id, cpu.cores or 1, current),
        best_throughput=seen[current],
        measurements=len(seen),
        seconds=time.perf_counter() - started,
        path=path,
    )


def neighbours(point: Point, max_log_batch: int) -> Iterator[Point]:
    for index, (instances, log_batch) in enumerate(point):
        for changed in (
            (instances + 1, log_batch),
            (instances - 1, log_batch),
            (instances, log_batch + 1),
            (instances, log_batch - 1),
        ):
            if 1 <= changed[0] <= MAX_INSTANCES and 0 <= changed[1] <= max_log_batch:
                yield (*point[:index], changed, *point[index + 1 :])


def to_plan(ensemble: Ensemble, cpu_id: str, cores: int, point: Point) -> Plan:
    """All instances on the CPU; the cores shared evenly so instances do not oversubscribe."""
    total = sum(instances for instances, _ in point)
    threads = even_threads(cores, total)
    names = [m.name for m in ensemble.members]
    return Plan(
        allocation={n: {cpu_id: i} for n, (i, _) in zip(names, point, strict=True)},
        batch_size={n: 2**b for n, (_, b) in zip(names, point, strict=True)},
        threads={n: threads for n in names},
    )
