"""The CPU cores this process may use: its CPU affinity, less what a cgroup CPU quota allows
(a container started with `--cpus 2` on a 16-core host has 16 cores in its affinity and the
time of 2)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The cores in this process's affinity, at most the cgroup's CPU quota (rounded down,
    at least one): a quota of 1.5 cores gives one, since two busy one-thread instances would be
    throttled for a third of every period."""
    affinity = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is None:
        return affinity
    return max(1, min(affinity, math.floor(quota + 1e-9)))


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """Cores' worth of CPU time the process's cgroup (or an ancestor) allows per period: cgroup
    v2's `cpu.max`, else v1's `cpu.cfs_quota_us / cpu.cfs_period_us`; None without a limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for hierarchy, controllers, path in _memberships(lines):
        if hierarchy == "0" and not controllers:  # v2: one unified hierarchy
            quotas += [q for d in _ancestors(cgroup_root, path) if (q := _v2_quota(d))]
        elif "cpu" in controllers.split(","):
            for mount in (
                cgroup_root / controllers,
                cgroup_root / "cpu",
                cgroup_root / "cpu,cpuacct",
            ):
                quotas += [q for d in _ancestors(mount, path) if (q := _v1_quota(d))]
    return min(quotas, default=None)


def _memberships(lines: list[str]) -> Iterator[tuple[str, str, str]]:
    """`hierarchy:controllers:path` lines of /proc/self/cgroup."""
    for line in lines:
        parts = line.strip().split(":", 2)
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]


def _ancestors(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup's folder under `mount` and every folder above it up to `mount` (a limit set
    on a parent applies to its children). Inside a container the mount is the container's own
    cgroup, so its root is read too."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    for depth in range(len(parts), -1, -1):
        folder = mount.joinpath(*parts[:depth])
        if folder.is_dir():
            yield folder


def _v2_quota(folder: Path) -> float | None:
    """`cpu.max`: `max 100000` (no limit) or `<quota> <period>` in microseconds."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    """`cpu.cfs_quota_us` (-1: no limit) over `cpu.cfs_period_us`."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
