"""Rich tables for what the commands show a person."""

from __future__ import annotations

import numpy as np
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
