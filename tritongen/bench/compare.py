"""`tritongen bench`: serve the measured configurations (docs/PLANNING.md) of one ensemble in one run and measure
them with perf_analyzer, against the hardware bound.

- naive: one instance per member, no dynamic batching (what a user gets by hand);
- batch_only: each member at its profiled best batch size, one instance (the paper's baseline);
- tritongen: the planned repository;
- bound: on a CPU, cores / Σ c_m (c_m: member m's one-thread CPU seconds per sample).

Configurations alternate round by round so that drift on a shared machine cancels.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tritongen.bench.cpu_use import cpu_seconds, per_request
from tritongen.bench.perf import (
    PerfPoint,
    RunQueue,
    input_data_for,
    measure,
    served_batches,
)
from tritongen.errors import TritongenError
from tritongen.plan.base_model import upper_bound
from tritongen.plan.conditions import has_figures, predicted_at, with_figures
from tritongen.plan.plan import Plan
from tritongen.plan.serving_model import Prediction
from tritongen.profile.profile import Profile
from tritongen.render.repository import Combiner, render_repository
from tritongen.serve.server import EmbeddedServer, model_counters
from tritongen.spec.devices import Device, Inventory
from tritongen.spec.members import Ensemble


@dataclass
class ServedMeasurer:
    """Render a plan, serve it on the embedded server and measure it with perf_analyzer.

    Callable as `measurer(plan) -> samples/s` (the planner's `PlanMeasurer`); it counts the
    configurations it served and the wall time they took, for the search-cost comparison.
    """

    ensemble: Ensemble
    inventory: Inventory
    workdir: Path
    concurrencies: Sequence[int] = (16, 64)
    interval_ms: int = 2000
    combiner: Combiner = Combiner.ensemble
    max_p99_ms: float | None = None  # a latency budget: only points within it count
    served: int = 0
    seconds: float = 0.0

    def __call__(self, plan: Plan) -> float:
        points = self.points(plan)
        within = [p for p in points if self.max_p99_ms is None or p.p99_ms <= self.max_p99_ms]
        return max((p.throughput for p in within), default=0.0)

    def points(self, plan: Plan) -> list[PerfPoint]:
        started = time.perf_counter()
        self.served += 1
        folder = self.workdir / f"config-{self.served}"
        repository = render_repository(
            self.ensemble, plan, self.inventory, folder, combiner=self.combiner, force=True
        )
        try:
            with EmbeddedServer(repository) as server:
                input_data = input_data_for(self.ensemble, self.workdir)
                return [self._measure_one(server, c, input_data) for c in self.concurrencies]
        finally:
            self.seconds += time.perf_counter() - started

    def _measure_one(self, server: EmbeddedServer, concurrency: int, input_data: str) -> PerfPoint:
        """One concurrency level, with the mean batch each served model executed meanwhile."""
        before, cpu_before = model_counters(server.metrics_url), cpu_seconds(server.pid)
        with RunQueue() as run_queue:
            (point,) = measure(
                server.grpc_url,
                self.ensemble.spec.name,
                [concurrency],
                interval_ms=self.interval_ms,
                input_data=input_data,
            )
        after, cpu_after = model_counters(server.metrics_url), cpu_seconds(server.pid)
        success = ("nv_inference_request_success", self.ensemble.spec.name)
        requests = after.get(success, 0.0) - before.get(success, 0.0)
        return replace(
            point,
            batches=served_batches(before, after),
            runnable=run_queue.mean,
            cpu_s_per_request=per_request(cpu_after.minus(cpu_before), requests),
        )


def naive_plan(ensemble: Ensemble, inventory: Inventory, device: Device | None = None) -> Plan:
    """One instance of each member on `device` (the CPU unless given), no dynamic batching;
    on a CPU with onnxruntime's default threads (all cores)."""
    device = device or _cpu(inventory)
    return Plan(
        allocation={m.name: {device.id: 1} for m in ensemble.members},
        batch_size={m.name: ensemble.spec.max_batch_size for m in ensemble.members},
        threads={m.name: _threads(device) for m in ensemble.members},
        dynamic_batching=False,
    )


def batch_only_plan(
    ensemble: Ensemble,
    inventory: Inventory,
    profile: Profile,
    device: Device | None = None,
    instances: int = 1,
) -> Plan:
    """`instances` instances (one: the paper's batch_only) of each member on `device` (the CPU
    unless given) at the batch size its profile rates best there."""
    device = device or _cpu(inventory)
    batch = {}
    for member in ensemble.members:
        entries = profile.entries(member.name, device.device_class)
        if not entries:
            raise TritongenError(f"profile has no {device.device_class} entries for {member.name}")
        batch[member.name] = max(entries, key=lambda b: entries[b].throughput)
    return Plan(
        allocation={m.name: {device.id: instances} for m in ensemble.members},
        batch_size=batch,
        threads={m.name: _threads(device) for m in ensemble.members},
    )


def _threads(device: Device) -> int:
    return (device.cores or 1) if device.kind == "cpu" else 1


def hardware_bound(ensemble: Ensemble, profile: Profile, inventory: Inventory) -> float:
    """What no configuration can beat (docs/PLANNING.md): on a CPU alone, `cpu_bound`; with
    GPUs, the time-sharing LP with every member on every device it was profiled on."""
    if all(d.kind == "cpu" for d in inventory.devices):
        return cpu_bound(profile, inventory)
    return upper_bound([m.name for m in ensemble.members], inventory, profile)


def cpu_bound(profile: Profile, inventory: Inventory) -> float:
    """The bound on a CPU (docs/PLANNING.md): cores / Σ_m c_m."""
    costs = profile.extra.get("cpu_cost_s_per_sample") or {}
    if not costs:
        raise TritongenError("the profile has no per-sample CPU costs; re-run `tritongen profile`")
    return (_cpu(inventory).cores or 1) / sum(costs.values())


def _cpu(inventory: Inventory) -> Device:
    if inventory.cpu is None:
        raise TritongenError("bench needs a CPU in the device inventory")
    return inventory.cpu


@dataclass
class BenchReport:
    plans: dict[str, Plan]
    rounds: list[dict[str, list[PerfPoint]]] = field(default_factory=list)
    bound: float = 0.0
    seconds: float = 0.0

    def median_points(self, config: str) -> list[PerfPoint]:
        """Per concurrency, the median over rounds of each figure."""
        runs = [r[config] for r in self.rounds]
        return [
            PerfPoint(
                concurrency=points[0].concurrency,
                throughput=statistics.median(p.throughput for p in points),
                p50_ms=statistics.median(p.p50_ms for p in points),
                p90_ms=statistics.median(p.p90_ms for p in points),
                p99_ms=statistics.median(p.p99_ms for p in points),
                stable=all(p.stable for p in points),
                batches=_median_batches(points),
                runnable=_median([p.runnable for p in points]),
            )
            for points in zip(*runs, strict=True)
        ]

    def best_throughput(self, config: str) -> float:
        return max(p.throughput for p in self.median_points(config))

    def to_json(self) -> dict[str, Any]:
        configs = {
            name: {
                "concurrency": {
                    str(p.concurrency): {
                        "throughput": p.throughput,
                        "p50_ms": p.p50_ms,
                        "p99_ms": p.p99_ms,
                        "stable": p.stable,
                        "batches": p.batches,
                        "runnable": p.runnable,
                        **_predicted_level(self.plans[name], p.concurrency),
                    }
                    for p in self.median_points(name)
                },
                "best_throughput": self.best_throughput(name),
                **self._predicted(name),
            }
            for name in self.plans
        }
        ours = self.best_throughput("tritongen")
        baselines = {
            f"tritongen/{n}": ours / self.best_throughput(n) for n in self.plans if n != "tritongen"
        }
        return {
            "configs": configs,
            "bound": {"throughput": self.bound},
            "ratios": {**baselines, "tritongen/bound": ours / self.bound},
            "rounds": len(self.rounds),
            "seconds": round(self.seconds, 1),
            "plans": {name: plan.to_json() for name, plan in self.plans.items()},
        }

    def _predicted(self, config: str) -> dict[str, Any]:
        """The plan.json figure for this benchmark's conditions (a client on this host, at the
        concurrency where it served best) beside what it served there."""
        plan = self.plans[config]
        best = max(self.median_points(config), key=lambda p: p.throughput)
        predicted = predicted_at(plan, best.concurrency)
        if predicted is None:
            return {}
        return {
            "predicted_throughput": predicted[0],
            "measured/predicted": best.throughput / predicted[0],
            "predicted_latency_ms": plan.extra.get("predicted_latency_ms_local_client", 0.0),
            "predicted_batches": plan.extra.get("predicted_batches", {}),
        }


def _predicted_level(plan: Plan, level: int) -> dict[str, float]:
    """plan.json's throughput and p50 for `level` requests in flight, a client on this host."""
    predicted = predicted_at(plan, level)
    if predicted is None:
        return {}
    return {"predicted_throughput": predicted[0], "predicted_p50_ms": predicted[1]}


def prediction_fields(prediction: Prediction, plan: Plan, served: float) -> dict[str, Any]:
    """A configuration's prediction as a report records it, beside its best served throughput."""
    return {
        "predicted_throughput": prediction.throughput,
        "measured/predicted": served / prediction.throughput,
        "predicted_latency_ms": prediction.latency_ms,
        "predicted_batches": {
            member: prediction.batches.get(i, 0.0) for i, member in enumerate(plan.allocation)
        },
    }


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _median_batches(points: Sequence[PerfPoint]) -> dict[str, float]:
    models = set().union(*(p.batches for p in points))
    return {
        m: statistics.median(p.batches[m] for p in points if m in p.batches) for m in sorted(models)
    }


def bench_plans(
    ensemble: Ensemble, inventory: Inventory, profile: Profile, tritongen_plan: Plan
) -> dict[str, Plan]:
    """The configurations compared (docs/PLANNING.md): naive, batch_only and tritongen's plan."""
    return {
        "naive": naive_plan(ensemble, inventory),
        "batch_only": batch_only_plan(ensemble, inventory, profile),
        "tritongen": tritongen_plan,
    }


def run_bench(
    ensemble: Ensemble,
    inventory: Inventory,
    profile: Profile,
    plans: dict[str, Plan],
    *,
    concurrencies: Sequence[int] = (1, 4, 16),
    interval_ms: int = 3000,
    rounds: int = 2,
    combiner: Combiner = Combiner.ensemble,
    on_result: Callable[[int, str, list[PerfPoint]], None] | None = None,
) -> BenchReport:
    """Serve each plan (one must be named `tritongen`) and measure it with perf_analyzer at each
    concurrency, alternating the order round by round so that drift cancels; each level is
    compared with what the plan's plan.json predicts for it (a client on this host)."""
    started = time.perf_counter()
    # Every plan served carries the figures its plan.json ships (a baseline made here, or a
    # plan.json written before they existed, gets them from the serving model now).
    plans = {
        name: plan if has_figures(plan) else with_figures(plan, inventory, profile)
        for name, plan in plans.items()
    }
    report = BenchReport(plans=plans, bound=hardware_bound(ensemble, profile, inventory))
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-") as tmp:
        measurer = ServedMeasurer(
            ensemble, inventory, Path(tmp), concurrencies, interval_ms, combiner
        )
        for round_index in range(rounds):
            order = list(plans) if round_index % 2 == 0 else list(reversed(plans))
            results: dict[str, list[PerfPoint]] = {}
            for name in order:
                results[name] = measurer.points(plans[name])
                if on_result:
                    on_result(round_index, name, results[name])
            report.rounds.append(results)
    report.seconds = time.perf_counter() - started
    return report


def levels_markdown(document: dict[str, Any]) -> list[str]:
    """Every measured level of a `BenchReport.to_json()` document as a Markdown table, each
    beside what its plan.json predicts there (a client on this host), then the ratios line
    (what the benchmark reports in benchmarks/ print)."""
    bound = document["bound"]["throughput"]
    lines = [
        "| configuration | concurrency | samples/s | predicted | p50 ms | predicted p50 "
        "| p99 ms | of bound | stable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, config in document["configs"].items():
        for level, p in sorted(config["concurrency"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {name} | {level} | {p['throughput']:.1f} | "
                f"{_cell(p.get('predicted_throughput'), 1)} | {p['p50_ms']:.1f} | "
                f"{_cell(p.get('predicted_p50_ms'), 2)} | {p['p99_ms']:.1f} | "
                f"{p['throughput'] / bound:.0%} | {'yes' if p['stable'] else 'no'} |"
            )
    ratios = ", ".join(f"{k} = **{v:.2f}**" for k, v in document["ratios"].items())
    return [*lines, "", f"Ratios (best concurrency of each): {ratios}", ""]


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def prediction_markdown(document: dict[str, Any]) -> list[str]:
    """The serving model's prediction beside the best served throughput, per configuration."""
    return [
        "| configuration | predicted (serving model, perf_analyzer on this machine) "
        "| served (best) | served/predicted |",
        "|---|---|---|---|",
        *(
            f"| {name} | {c['predicted_throughput']:.1f} | {c['best_throughput']:.1f} | "
            f"{c['measured/predicted']:.2f} |"
            for name, c in document["configs"].items()
            if "predicted_throughput" in c
        ),
        "",
    ]
