"""Rich tables for what the commands show a person."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from tritongen.costmodel import memory_used
from tritongen.devices import Inventory
from tritongen.plan import Plan
from tritongen.profile import Profile


def inventory_table(inventory: Inventory) -> Table:
    table = Table(title="Devices")
    for column in ("id", "kind", "class", "memory", "cores"):
        table.add_column(column)
    for d in inventory.devices:
        table.add_row(d.id, d.kind, d.device_class, gib(d.memory_bytes), str(d.cores or ""))
    return table


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


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
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("predicted throughput", f"{plan.predicted_throughput:,.1f} samples/s")
    baseline = plan.extra.get("baseline")
    if baseline:
        ratio = plan.predicted_throughput / baseline
        summary.add_row("baseline (batch only)", f"{baseline:,.1f} samples/s  (×{ratio:.2f})")
    bound = plan.extra.get("bound")
    if bound:
        share = plan.predicted_throughput / bound
        summary.add_row("bound (memory ignored)", f"{bound:,.1f} samples/s  ({share:.0%})")
    if plan.extra.get("bottleneck"):
        summary.add_row("bottleneck", str(plan.extra["bottleneck"]))
    return summary
