"""Pictures a person would rather look at than read: throughput per configuration against
concurrency, and the allocation matrix as a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np

from tritongen.plan.plan import Plan


def throughput_plot(report: dict[str, Any], path: Path, title: str) -> Path:
    """`report` is `tritongen bench --json`'s document."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, config in report["configs"].items():
        levels = sorted(config["concurrency"], key=int)
        ax.plot(
            [int(c) for c in levels],
            [config["concurrency"][c]["throughput"] for c in levels],
            marker="o",
            label=name,
        )
    ax.axhline(report["bound"]["throughput"], color="black", linestyle="--", label="bound")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("ensemble throughput (samples/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def allocation_heatmap(plan: Plan, path: Path, title: str) -> Path:
    """Devices × members, each cell the number of instances (and the batch size below)."""
    members = list(plan.allocation)
    devices = sorted({d for row in plan.allocation.values() for d in row})
    counts = np.array([[plan.allocation[m].get(d, 0) for m in members] for d in devices])
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(members), 1.4 + 0.6 * len(devices)), dpi=120)
    ax.imshow(counts, cmap="Blues", vmin=0, aspect="auto")
    ax.set_xticks(range(len(members)), [f"{m}\nbatch {plan.batch_size[m]}" for m in members])
    ax.set_yticks(range(len(devices)), devices)
    for (row, col), value in np.ndenumerate(counts):
        ax.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            color="white" if value > counts.max() / 2 else "black",
        )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
