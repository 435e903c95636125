"""Which instance curves a profile carries, and how they are measured or read from the cache.

On a CPU, a curve at every batch a member was profiled at with one thread: k one-thread
instances, k up to the cores (the serving model reads it as the cores' contention, which
depends on the batch: at small batches a large member streams its weights from memory on
every call, and k instances share the memory's bandwidth; at large batches they compute).
On a GPU, a curve at every profiled batch, k = 1, 2, ... until a level no longer raises any
batch's throughput by GPU_LEVEL_GAIN, or k instances would not fit the GPU's memory: the
planner chooses batch and instances together, and the gain of a second instance is largest
at small batches, where one instance leaves the GPU idle between its kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from tritongen.profile.cache import PointCache, PointKey
from tritongen.profile.concurrency import (
    GPU_LEVEL_GAIN,
    GPU_MAX_INSTANCES,
    Measure,
    instance_levels,
)
from tritongen.profile.worker import ConcurrencyPoint, Job, Point

Curve = dict[str, float]  # {"1": alone, "2": two together, ...}: total samples/s


@dataclass
class InstanceCurves:
    """Measures (or reads from the cache) k instances together for one member on one device.

    `job_of(batches)` is the member's job on that device; `key_of(batch)` its cache key."""

    cache: PointCache
    point_s: float
    notes: list[str]
    run: Measure
    use_cache: bool = True
    gpu_max_instances: int = GPU_MAX_INSTANCES

    def cpu_curves(
        self,
        name: str,
        device: str,
        cores: int,
        alone: dict[int, Point],
        job_of: JobOf,
        key_of: KeyOf,
    ) -> dict[int, Curve]:
        """A curve per batch, k = 2, 4, ... up to the cores, up to the first failure."""
        curves = {b: {"1": round(p.throughput, 3)} for b, p in alone.items()}
        for k in instance_levels("cpu", cores):
            found = self._level(name, device, k, tuple(sorted(alone)), job_of, key_of)
            if found is None:
                break
            for batch, point in found.items():
                curves[batch][str(k)] = round(point.throughput, 3)
        return curves

    def gpu_curves(
        self,
        name: str,
        device: str,
        alone: dict[int, Point],
        memory_bytes: int,
        job_of: JobOf,
        key_of: KeyOf,
    ) -> dict[int, Curve]:
        """A curve per batch; k grows while a level pays and k instances fit `memory_bytes`
        (each instance's memory at its largest batch, its CUDA context included)."""
        curves = {b: {"1": round(p.throughput, 3)} for b, p in alone.items()}
        per_instance = max(p.memory_bytes for p in alone.values())
        for k in instance_levels("gpu", 1)[: self.gpu_max_instances - 1]:
            if k * per_instance > memory_bytes:
                self.notes.append(f"{name}: {k} instances would not fit {device}'s memory")
                break
            found = self._level(name, device, k, tuple(sorted(alone)), job_of, key_of)
            if found is None:
                break
            for batch, point in found.items():
                curves[batch][str(k)] = round(point.throughput, 3)
            if not any(_pays(curves[b], k) for b in found):
                break
        return curves

    def _level(
        self, name: str, device: str, k: int, batches: tuple[int, ...], job_of: JobOf, key_of: KeyOf
    ) -> dict[int, ConcurrencyPoint] | None:
        """k instances at every batch: from the cache where all are there, else measured."""
        keys = {b: replace(key_of(b), instances=k) for b in batches}
        if self.use_cache:
            cached = {
                b: self.cache.get(key, self.point_s, ConcurrencyPoint) for b, key in keys.items()
            }
            if all(p is not None for p in cached.values()):
                return {b: p for b, p in cached.items() if p is not None}
        try:
            measured = self.run(job_of(batches), batches, k)
        except RuntimeError as exc:
            self.notes.append(f"{name}: {k} instances together on {device} not measured: {exc}")
            return None
        for batch, point in measured.items():
            self.cache.put(keys[batch], point)
        return measured


def _pays(curve: Curve, k: int) -> bool:
    return curve[str(k)] >= (1 + GPU_LEVEL_GAIN) * curve[str(k - 1)]


JobOf = Callable[[tuple[int, ...]], Job]
KeyOf = Callable[[int], PointKey]
