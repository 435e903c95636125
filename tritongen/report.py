"""Rich tables for what the commands show a person."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table

from tritongen.plan.base_model import memory_used
from tritongen.plan.plan import Plan
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory
from tritongen.units import gib


def inventory_table(inventory: Inventory) -> Table:
    table = Table(title="Devices")
    for column in ("id", "kind", "class", "memory", "cores"):
        table.add_column(column)
    for d in inventory.devices:
        table.add_row(d.id, d.kind, d.device_class, gib(d.memory_bytes), str(d.cores or ""))
    return table


def top_k_table(classes: np.ndarray, scores: np.ndarray) -> Table:
    table = Table(title="Top classes per row")
    table.add_column("row", justify="right")
    for rank in range(classes.shape[1]):
        table.add_column(f"#{rank + 1} class (score)")
    for row, (row_classes, row_scores) in enumerate(zip(classes, scores, strict=True)):
        table.add_row(
            str(row), *(f"{c} ({s:.3f})" for c, s in zip(row_classes, row_scores, strict=True))
        )
    return table


def bench_table(report: dict[str, Any]) -> Table:
    """`tritongen bench`'s report: throughput and latency per configuration and concurrency."""
    table = Table(
        title=f"Ensemble throughput (bound {report['bound']['throughput']:.1f} samples/s)"
    )
    for column in ("configuration", "concurrency", "samples/s", "p50 ms", "p99 ms", "of bound"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    bound = report["bound"]["throughput"]
    for name, config in report["configs"].items():
        for level, point in sorted(config["concurrency"].items(), key=lambda kv: int(kv[0])):
            table.add_row(
                name,
                level,
                f"{point['throughput']:.1f}",
                f"{point['p50_ms']:.2f}",
                f"{point['p99_ms']:.2f}",
                f"{point['throughput'] / bound:.0%}",
            )
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in report["ratios"].items())
    table.caption = ratios
    return table


def prediction_table(report: dict[str, Any]) -> Table:
    """Each configuration's best measured throughput against the serving model's prediction
    (made with the load generator on this machine)."""
    table = Table(title="Predicted and served")
    for column in ("configuration", "predicted samples/s", "served (best)", "served/predicted"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, config in report["configs"].items():
        if "predicted_throughput" in config:
            table.add_row(
                name,
                f"{config['predicted_throughput']:.1f}",
                f"{config['best_throughput']:.1f}",
                f"{config['measured/predicted']:.2f}",
            )
    return table


def profile_table(profile: Profile) -> Table:
    """One row per member x device class x batch size."""
    table = Table(title="Profile (one instance alone)")
    for column in ("member", "device", "batch", "samples/s", "p50 ms", "spread", "memory"):
        table.add_column(column, justify="left" if column in ("member", "device") else "right")
    for member, by_class in profile.members.items():
        for device_class, by_batch in by_class.items():
            for batch, entry in sorted(by_batch.items()):
                table.add_row(
                    member,
                    f"{device_class} ({entry.extra.get('threads', '?')} thr)",
                    str(batch),
                    f"{entry.throughput:,.0f}",
                    f"{entry.extra.get('latency_ms', float('nan')):.3f}",
                    f"{entry.extra.get('spread', float('nan')):.0%}",
                    gib(entry.memory_bytes),
                )
    return table


def skipped_lines(profile: Profile) -> list[str]:
    """`skipped: member on class batch b: reason`, one line each."""
    lines = []
    for item in profile.skipped:
        batch = "every batch" if item.get("batch") is None else f"batch {item['batch']}"
        lines.append(
            f"skipped: {item['member']} on {item['device_class']}, {batch}: {item['reason']}"
        )
    return lines


def plan_table(plan: Plan, inventory: Inventory, profile: Profile) -> Group:
    """The allocation matrix (devices × members: instances), memory used/free per device,
    the batch sizes and the predicted throughput against the baseline."""
    members = list(plan.allocation)
    matrix = Table(title="Allocation (instances per device)")
    matrix.add_column("device")
    for member in members:
        matrix.add_column(member, justify="right")
    matrix.add_column("memory used", justify="right")
    matrix.add_column("free", justify="right")
    used = memory_used(plan.allocation, plan.batch_size, inventory, profile)
    for device in inventory.devices:
        counts = [str(plan.allocation[m].get(device.id, "") or "·") for m in members]
        free = device.memory_bytes - used[device.id]
        matrix.add_row(device.id, *counts, gib(used[device.id]), gib(free))
    matrix.add_row("batch size", *(str(plan.batch_size[m]) for m in members), "", "", style="bold")
    return Group(matrix, _summary(plan))


def _summary(plan: Plan) -> Table:
    """One predicted throughput (the serving model's) and what it rests on."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("served as", shape_line(plan))
    summary.add_row(
        "predicted throughput",
        f"{plan.predicted_throughput:,.1f} samples/s (serving model; clients elsewhere)",
    )
    cost = plan.extra.get("serving_cost")
    if isinstance(cost, dict) and "per_call_s" in cost:
        summary.add_row(
            "resting on",
            f"the profile and a served call costing {1000 * cost['per_call_s']:.2f} ms CPU "
            f"({cost.get('source', '?')})",
        )
    baseline = plan.extra.get("baseline")
    if baseline:
        ratio = plan.predicted_throughput / baseline
        summary.add_row(
            "one instance per member", f"{baseline:,.1f} samples/s predicted  (plan ×{ratio:.2f})"
        )
    bound = plan.extra.get("bound")
    if bound:
        share = plan.predicted_throughput / bound
        summary.add_row("hardware bound", f"{bound:,.1f} samples/s  (plan at {share:.0%})")
    if plan.extra.get("bottleneck"):
        summary.add_row("bottleneck", str(plan.extra["bottleneck"]))
    if plan.extra.get("max_p99_ms"):
        summary.add_row("p99 budget", budget_line(plan))
    return summary


def budget_line(plan: Plan) -> str:
    """The p99 budget, and what the plan served against it where it was checked."""
    budget = plan.extra["max_p99_ms"]
    check = plan.extra.get("budget_check")
    if not isinstance(check, dict):
        predicted = plan.extra.get("predicted_p99_ms")
        said = f"; predicted {predicted:.1f} ms" if isinstance(predicted, (int, float)) else ""
        return f"{budget:g} ms{said} (not checked by serving)"
    served = len(plan.extra.get("budget_checks", [check]))
    return (
        f"{budget:g} ms; served {check['served_p99_ms']:.1f} ms at {check['concurrency']} in "
        f"flight with a client on this host (predicted {check['predicted_p99_ms']:.1f}; "
        f"{served} plan{'s' if served > 1 else ''} served to check)"
    )


def shape_line(plan: Plan) -> str:
    """How Triton serves the plan: members alone, or groups of co-located members."""
    if not plan.groups:
        return "each member as a model of its own, Triton's scheduler fanning requests out"
    parts = []
    for group in plan.groups.values():
        instances = sum(group.allocation.values())
        where = ", ".join(group.allocation)
        # A batch size of 1 renders no preferred size: Triton batches whatever is queued.
        batches = f"up to {group.batch_size}" if group.batch_size > 1 else "as large as queued"
        parts.append(
            f"{', '.join(group.members)} in one model on {where} ({instances} instances, "
            f"batches {batches})"
        )
    alone = [m for m in plan.allocation if plan.group_of(m) is None]
    if alone:
        parts.append(f"{', '.join(alone)} alone")
    return "; ".join(parts)
