"""Rich tables for what the commands show a person."""

from __future__ import annotations

from rich.table import Table

from tritongen.devices import Inventory


def inventory_table(inventory: Inventory) -> Table:
    table = Table(title="Devices")
    for column in ("id", "kind", "class", "memory", "cores"):
        table.add_column(column)
    for d in inventory.devices:
        table.add_row(d.id, d.kind, d.device_class, gib(d.memory_bytes), str(d.cores or ""))
    return table


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
