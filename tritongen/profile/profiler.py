"""`profile_ensemble`: measure how fast one instance of each member runs, and how much memory
it takes, per device class and batch size (the `Profile` of `tritongen.profile.profile`).

How a profile is taken:
- one child process (spawned, so nothing is inherited) per member x device class x thread
  count runs every batch size of that member in ascending order; `tritongen.profile.worker`
  explains why that gives each batch a clean memory figure;
- a CPU class is measured with intra-op threads = its cores (how it is served) and again with
  one thread, which gives each member's per-sample CPU cost (the CPU bound, docs/PLANNING.md);
- measured points are cached per (model sha256, device class, onnxruntime, batch, threads).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from tritongen.errors import ProfileError, SpecError
from tritongen.profile.cache import PointCache, PointKey
from tritongen.profile.children import measure, run_in_child
from tritongen.profile.concurrency import GPU_MAX_INSTANCES, Measure, instances_together
from tritongen.profile.curves import Curve, InstanceCurves, JobOf, KeyOf
from tritongen.profile.lone import group_key, lone_in_group
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost, default_cost
from tritongen.profile.runtime import TORCH, runtime_version, session_settings
from tritongen.profile.tasks import PointId, Runner, Skipped, Target, Task
from tritongen.profile.worker import InputFeed, Job, Point
from tritongen.spec.devices import Device, Inventory, detect_gpus, usable_cores
from tritongen.spec.members import Ensemble, MemberModel

DEFAULT_POINT_S = 0.6  # timed seconds per (member, device class, batch, threads)
MIN_POINT_S = 0.02  # --budget-s never goes below this (nor below the worker's minimum runs)
ROUNDS = 3
LONE_IN_GROUP = "lone_latency_s_in_group"  # entry keys of a group's rotation (`profile.lone`)
IN_GROUP = "cpu_cost_s_per_sample_in_group"
# Where no serving cost was measured: about what one measured on a 2-core machine (0.6-1.1 ms)
DEFAULT_LONE_GAP_S = 0.001


def profile_ensemble(
    ensemble: Ensemble,
    inventory: Inventory,
    *,
    batch_sizes: Sequence[int] | None = None,
    budget_s: float | None = None,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    progress: bool = True,
    serving: ServingCost | None = None,
    local_gpus: Sequence[Device] | None = None,
    runner: Runner | None = None,
    concurrency: bool = True,
    together_runner: Measure = instances_together,
    gpu_instances: int = GPU_MAX_INSTANCES,
) -> Profile:
    """Measure every member on every device class of `inventory` that this machine has.

    `batch_sizes` defaults to the powers of two up to the spec's max_batch_size; `budget_s`
    scales down the time per point so the whole profile aims to take about that long;
    `use_cache=False` re-measures (and refreshes the cache). `serving` is what a served call
    costs beyond the member's compute (`serving_cost.serving_cost`; the default when None).
    `concurrency` also measures k instances together (`tritongen.profile.concurrency`), on a
    GPU up to `gpu_instances` of them.
    `local_gpus`, `runner` and `together_runner` are the GPUs found here and the functions
    that run a job in child processes (tests pass fakes). What could not be measured is listed
    in `extra["skipped"]`, never raised."""
    started, load_before = time.perf_counter(), _load_average()
    notes: list[str] = []
    batches = _candidate_batches(ensemble, batch_sizes)
    targets, skipped = measurable_targets(ensemble, inventory, local_gpus, notes)
    tasks, batch_skips = plan_tasks(ensemble, targets, batches)
    skipped += batch_skips
    point_s = point_seconds(budget_s, sum(len(t.batches) for t in tasks))
    cache, version = PointCache(cache_dir), _onnxruntime_version()
    points = _cached_points(tasks, cache, version, point_s) if use_cache else {}
    gap_s = lone_gap_s(serving)
    jobs = [j for t in tasks if (j := _job(t, points, point_s, gap_s)) is not None]
    measured, failures = measure(jobs, runner or run_in_child, progress)
    for (task, _), by_batch in zip(jobs, measured, strict=True):
        for point in by_batch.values():
            cache.put(_key(task, version, point.batch), point)
            points[_point_id(task, point.batch)] = point
    extra = {
        "onnxruntime": version,
        "point_s": point_s,
        "rounds": ROUNDS,
        "session": {t.device_class: member_settings(t, t.threads[0]).describe() for t in targets},
        "runtime": {m.name: m.runtime for m in ensemble.members},
        "serving_cost": (serving or default_cost("not measured")).to_json(),
        **cpu_costs(ensemble, targets, points),
        "instance_overhead_bytes": _process_bytes(targets, points),
        "input_shapes": {m.name: m.input_shapes for m in ensemble.members},
        "skipped": [asdict(s) for s in _unique(skipped + failures)],
        "warnings": notes,
        "measured_points": sum(len(m) for m in measured),
        "cached_points": len(points) - sum(len(m) for m in measured),
        "wall_s": round(time.perf_counter() - started, 2),
        "load_average_1min": [load_before, _load_average()],
    }
    members = assemble(ensemble, targets, points)
    rotation = partial(lone_in_group, cache=cache, use_cache=use_cache)
    for target in (t for t in targets if t.kind == "cpu"):
        _add_group_lone(members, tasks, target, (rotation, version, point_s, gap_s), notes)
    if concurrency:
        curves = InstanceCurves(cache, point_s, notes, together_runner, use_cache, gpu_instances)
        for target in targets:
            _add_curves(members, ensemble, target, points, curves, version)
    return Profile(members=members, extra=extra)


def _add_group_lone(
    members: dict[str, dict[str, dict[int, ProfileEntry]]],
    tasks: Sequence[Task],
    target: Target,
    how: tuple[Callable[..., dict[str, float]], str, float, float],
    notes: list[str],
) -> None:
    """The rotation through a group of the one-thread members on `target` (`profile.lone`),
    in their entries: at batch 1 after a lone request's pause, seconds per call as
    `extra["lone_latency_s_in_group"]`; back to back at the largest batch two or more of them
    were measured at (those members), one rotation per core at once, CPU seconds per sample
    as `extra["cpu_cost_s_per_sample_in_group"]`."""
    rotation, version, point_s, gap_s = how
    alone = [
        t
        for t in tasks
        if t.target == target and t.threads == 1
        and members.get(t.member.name, {}).get(target.device_class)
    ]  # fmt: skip
    if len(alone) < 2:
        return
    cores = target.threads[0]
    rotations = [
        (1, gap_s, LONE_IN_GROUP, 1),
        (_largest_shared(alone, members), 0.0, IN_GROUP, cores),
    ]
    for batch, pause, key_name, processes in rotations:
        these = [t for t in alone if batch in members[t.member.name][target.device_class]]
        if len(these) < 2 or (key_name == IN_GROUP and batch == 1):
            continue
        jobs = {t.member.name: _job(replace(t, batches=(batch,)), {}, point_s)[1] for t in these}
        try:
            key = group_key([_key(t, version, batch) for t in these])
            seconds = rotation(jobs, pause, key=key, processes=processes)
        except RuntimeError as exc:
            notes.append(f"a group's rotation at batch {batch} on {target.device_class}: {exc}")
            continue
        for name, value in seconds.items():  # per call at batch 1; per sample (CPU) beyond
            members[name][target.device_class][batch].extra[key_name] = value / batch


def _largest_shared(tasks: Sequence[Task], members: dict[str, dict[str, dict[int, Any]]]) -> int:
    """The largest batch at least two of `tasks`' members have an entry at (1 if none)."""
    seen: dict[int, int] = {}
    for t in tasks:
        for batch in members[t.member.name][t.target.device_class]:
            seen[batch] = seen.get(batch, 0) + 1
    return max((b for b, n in seen.items() if n >= 2), default=1)


def _add_curves(
    members: dict[str, dict[str, dict[int, ProfileEntry]]],
    ensemble: Ensemble,
    target: Target,
    points: dict[PointId, Point],
    curves: InstanceCurves,
    version: str,
) -> None:
    """Each member's curves of k instances together (one thread each on a CPU), in the
    entries of the batches they were measured at, as `extra["concurrency"]`."""
    for member in ensemble.members:
        alone = {
            b: p
            for (name, cls, threads, b), p in points.items()
            if (name, cls, threads) == (member.name, target.device_class, 1)
        }
        entries = members.get(member.name, {}).get(target.device_class, {})
        if not alone or not entries:
            continue
        base = Task(member, target, 1, (), input_feeds(ensemble, member))
        job_of = partial(_curve_job, base, curves.point_s)
        key_of = partial(_key, base, version)
        found = _member_curves(member.name, target, alone, curves, job_of, key_of)
        for batch, curve in found.items():
            if batch in entries:
                entries[batch].extra["concurrency"] = curve


def _curve_job(base: Task, point_s: float, batches: tuple[int, ...]) -> Job:
    return _job(replace(base, batches=batches), {}, point_s)[1]


def _member_curves(
    name: str,
    target: Target,
    alone: dict[int, Point],
    curves: InstanceCurves,
    job_of: JobOf,
    key_of: KeyOf,
) -> dict[int, Curve]:
    """A curve at every batch measured with one thread (`tritongen.profile.curves`)."""
    if target.kind == "cpu":
        cores = target.threads[0]
        return curves.cpu_curves(name, target.device_class, cores, alone, job_of, key_of)
    memory = target.memory_bytes or 0
    return curves.gpu_curves(name, target.device_class, alone, memory, job_of, key_of)


def default_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to max_batch_size, and max_batch_size itself (the planner may pick it)."""
    sizes = [2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size]
    return sorted({*sizes, max_batch_size})


def parse_batch_sizes(text: str) -> list[int]:
    """`--batch-sizes 1,2,8` -> [1, 2, 8]."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SpecError(f"--batch-sizes {text!r}: expected integers like 1,2,4,8") from None
    if not sizes or sizes[0] < 1:
        raise SpecError(f"--batch-sizes {text!r}: give one or more batch sizes >= 1")
    return sizes


def point_seconds(budget_s: float | None, n_points: int) -> float:
    """Timed seconds per point. Warm-up adds a quarter, and starting the children and loading
    sessions takes its share, so about 60% of a budget goes to timed runs."""
    if budget_s is None:
        return DEFAULT_POINT_S
    if budget_s <= 0:
        raise SpecError(f"--budget-s {budget_s}: must be > 0")
    share = 0.6 * budget_s / max(1, n_points) / 1.25
    return min(DEFAULT_POINT_S, max(MIN_POINT_S, share))


def measurable_targets(
    ensemble: Ensemble,
    inventory: Inventory,
    local_gpus: Sequence[Device] | None,
    notes: list[str],
) -> tuple[list[Target], list[Skipped]]:
    """One target per device class; a GPU class this machine lacks is skipped, not guessed."""
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for device_class in inventory.classes:
        device = next(d for d in inventory.devices if d.device_class == device_class)
        if device.kind == "cpu":
            targets.append(_cpu_target(device, notes))
            continue
        gpus = detect_gpus() if local_gpus is None else local_gpus
        here = next((g for g in gpus if g.device_class == device_class), None)
        if here is None:
            reason = f"no {device_class} GPU on this machine; profile there and merge the files"
            skipped += [Skipped(m.name, device_class, None, reason) for m in ensemble.members]
        else:
            targets.append(Target(device_class, "gpu", (1,), here.gpu_index, here.memory_bytes))
    return targets, skipped


def _cpu_target(device: Device, notes: list[str]) -> Target:
    usable = usable_cores()
    cores = min(device.cores or 1, usable)
    if cores < (device.cores or 1):
        notes.append(
            f"{device.id}: the inventory says {device.cores} cores but this process may use "
            f"{usable}; {device.device_class} was measured with {cores} threads"
        )
    return Target(device.device_class, "cpu", (cores, 1) if cores > 1 else (1,))


def plan_tasks(
    ensemble: Ensemble, targets: Sequence[Target], batches: Sequence[int]
) -> tuple[list[Task], list[Skipped]]:
    tasks: list[Task] = []
    skipped: list[Skipped] = []
    for member in ensemble.members:
        runnable, refused = member_batches(member, batches)
        feeds = input_feeds(ensemble, member)
        for target in targets:
            skipped += [Skipped(member.name, target.device_class, b, r) for b, r in refused]
            if runnable:
                tasks += [Task(member, target, t, runnable, feeds) for t in target.threads]
    return tasks, skipped


def input_feeds(ensemble: Ensemble, member: MemberModel) -> tuple[InputFeed, ...]:
    """Every input of the member at its served shape, with the values the spec asks for."""
    return tuple(
        InputFeed(i.name, i.dtype, i.dims, ensemble.member_fill(member, i.name))
        for i in member.inputs
    )


def member_batches(
    member: MemberModel, batches: Sequence[int]
) -> tuple[tuple[int, ...], list[tuple[int, str]]]:
    """The batches a member can run, and why it cannot run the others: a model exported with
    a fixed batch dimension runs that batch size only."""
    fixed = member.max_batch_limit
    if fixed is None:
        return tuple(batches), []
    runnable = (fixed,) if fixed <= max(batches) else ()
    reason = (
        f"{member.path.name} fixes its batch dimension to {fixed}; "
        "re-export it with a dynamic batch axis to serve other batch sizes"
    )
    return runnable, [(b, reason) for b in batches if b != fixed]


def _candidate_batches(ensemble: Ensemble, batch_sizes: Sequence[int] | None) -> list[int]:
    if batch_sizes:
        return sorted(set(batch_sizes))
    return default_batch_sizes(ensemble.spec.max_batch_size)


def member_settings(target: Target, threads: int, member: MemberModel | None = None) -> Any:
    if member is None or member.runtime != TORCH:
        return session_settings(target.kind, threads, target.gpu_index)
    return session_settings(
        target.kind,
        threads,
        target.gpu_index,
        runtime=TORCH,
        input_names=[i.name for i in member.inputs],
        output_index=member.output_index,
    )


def lone_gap_s(serving: ServingCost | None) -> float:
    """How long a served instance waits between the calls of requests sent one at a time:
    the rest of a lone request's trip (the serving cost's `path_s`), else DEFAULT_LONE_GAP_S."""
    if serving is not None and serving.path_s > 0:
        return serving.path_s
    return DEFAULT_LONE_GAP_S


def _job(task: Task, points: dict[PointId, Point], point_s: float, gap_s: float = 0.0) -> Any:
    """The Job for the batches of `task` the cache did not answer, paired with its task."""
    missing = tuple(b for b in task.batches if _point_id(task, b) not in points)
    if not missing:
        return None
    job = Job(
        model_path=str(task.member.served_file),
        inputs=task.inputs,
        batches=missing,
        settings=member_settings(task.target, task.threads, task.member),
        kind=task.target.kind,
        gpu_index=task.target.gpu_index,
        point_s=point_s,
        rounds=ROUNDS,
        lone_gap_s=gap_s,
    )
    return task, job


def _point_id(task: Task, batch: int) -> PointId:
    return (task.member.name, task.target.device_class, task.threads, batch)


def _key(task: Task, version: str, batch: int) -> PointKey:
    """The cache key of one point; `version` is onnxruntime's, replaced by torch's for a
    member served by torch."""
    if task.member.runtime == TORCH:
        version = runtime_version(TORCH)
    shapes = json.dumps(task.member.input_shapes, sort_keys=True)
    return PointKey(
        task.member.sha256, task.target.device_class, version, batch, task.threads, shapes
    )


def _cached_points(
    tasks: Iterable[Task], cache: PointCache, version: str, point_s: float
) -> dict[PointId, Point]:
    found = {}
    for task in tasks:
        for batch in task.batches:
            point = cache.get(_key(task, version, batch), point_s)
            if point is not None:
                found[_point_id(task, batch)] = point
    return found


def assemble(
    ensemble: Ensemble, targets: Sequence[Target], points: dict[PointId, Point]
) -> dict[str, dict[str, dict[int, ProfileEntry]]]:
    """member -> device class -> batch -> entry, from the points at the served thread count."""
    members: dict[str, dict[str, dict[int, ProfileEntry]]] = {}
    for member in ensemble.members:
        by_class = {}
        for target in targets:
            served = target.threads[0]
            entries = {
                batch: _entry_from_point(point, target, points, member.name)
                for (name, cls, threads, batch), point in sorted(points.items())
                if (name, cls, threads) == (member.name, target.device_class, served)
            }
            if entries:
                by_class[target.device_class] = entries
        members[member.name] = by_class
    return members


def _entry_from_point(
    point: Point, target: Target, points: dict[PointId, Point], member: str
) -> ProfileEntry:
    batch, device_class = point.batch, target.device_class
    extra: dict[str, Any] = {
        "threads": point.threads,
        "latency_ms": round(point.latency_s * 1e3, 4),
        "latency_p90_ms": round(point.latency_p90_s * 1e3, 4),
        "spread": round(point.spread, 4),
        "runs": point.runs,
        "contention": None if point.contention is None else round(point.contention, 4),
        "retried_rounds": point.retried_rounds,
    }
    by_threads = {t: points.get((member, device_class, t, batch)) for t in target.threads}
    if len(by_threads) > 1:
        extra["throughput_by_threads"] = {
            str(t): round(p.throughput, 3) for t, p in by_threads.items() if p is not None
        }
    single = by_threads.get(1)
    if target.kind == "cpu" and single is not None:
        extra["cpu_cost_s_per_sample"] = single.cpu_s_per_call / batch
    lone = {str(t): p.lone_latency_s for t, p in by_threads.items() if p and p.lone_latency_s}
    if lone:  # seconds of a lone request's call, by threads (docs/SERVING.md, *Latency*)
        extra["lone_latency_s_by_threads"] = lone
    if target.kind == "gpu":  # the host's side of a GPU call: launches, waits, copies
        extra["host_cpu_s_per_sample"] = point.cpu_s_per_call / batch
    return ProfileEntry(round(point.throughput, 3), point.memory_bytes, extra)


def cpu_costs(
    ensemble: Ensemble, targets: Sequence[Target], points: dict[PointId, Point]
) -> dict[str, dict[str, Any]]:
    """Each member's CPU seconds per sample on one thread at its best batch size, and that
    batch: `cores / sum(cost)` is the CPU bound (docs/PLANNING.md). Process CPU time, not wall time:
    on a shared machine the time other processes hold the core is not the member's cost."""
    cpu = next((t for t in targets if t.kind == "cpu"), None)
    costs: dict[str, float] = {}
    best: dict[str, int] = {}
    for member in ensemble.members:
        per_batch = {
            batch: point.cpu_s_per_call / batch
            for (name, cls, threads, batch), point in points.items()
            if cpu and (name, cls, threads) == (member.name, cpu.device_class, 1)
        }
        if per_batch:
            best[member.name] = min(per_batch, key=per_batch.__getitem__)
            costs[member.name] = per_batch[best[member.name]]
    return {"cpu_cost_s_per_sample": costs, "cpu_cost_batch": best}


def _process_bytes(targets: Sequence[Target], points: dict[PointId, Point]) -> dict[str, int]:
    """Per CPU class: the resident memory of a fresh worker with onnxruntime loaded, before
    any session. A served instance is a process of its own and pays it on top of its entry."""
    return {
        t.device_class: max(p.process_bytes for (_, c, _, _), p in points.items() if c == cls)
        for t in targets
        if t.kind == "cpu" and any(c == (cls := t.device_class) for (_, c, _, _) in points)
    }


def require_measured(profile: Profile, where: str) -> None:
    """Raise one ProfileError line if some member has no entry on any device: the planner
    cannot place it. `where` names the file that keeps what was measured."""
    reasons: dict[str, str] = {}
    for item in profile.skipped:
        reasons.setdefault(item["member"], item["reason"])
    for member, by_class in profile.members.items():
        if not any(by_class.values()):
            reason = reasons.get(member, "no device class to measure on")
            raise ProfileError(
                f"member {member} could not be measured on any device: {reason}; "
                f"{where} keeps what was measured"
            )


def _unique(skipped: Iterable[Skipped]) -> list[Skipped]:
    """One line per (member, device class, batch): the served run's reason when both fail."""
    seen: dict[tuple[str, str, int | None], Skipped] = {}
    for item in skipped:
        seen.setdefault((item.member, item.device_class, item.batch), item)
    return list(seen.values())


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0
