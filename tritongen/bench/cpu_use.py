"""Where the CPU goes while a level is measured: tritonserver's own process, the model
processes it started (Python-backend stubs), and the load generator, each in CPU seconds per
request served over the same window. The serving model predicts the first and the last from
a stand-in that computes nothing (`bench/serving_cost.py`); a served plan's figures say how far
that holds when real members share the cores.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class CpuSeconds:
    server: float  # tritonserver's own process
    models: float  # the processes it started (one per Python-backend instance)
    client: float  # child processes of this one that have ended (perf_analyzer)

    def minus(self, earlier: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(
            self.server - earlier.server,
            self.models - earlier.models,
            self.client - earlier.client,
        )


def cpu_seconds(server_pid: int) -> CpuSeconds:
    """CPU seconds so far of tritonserver `server_pid`, of its descendants alive now, and of
    this process's finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        server = psutil.Process(server_pid)
        own = _seconds(server)
        models = sum(_seconds(p) for p in server.children(recursive=True))
    except psutil.Error:
        own = models = 0.0
    return CpuSeconds(own, models, children.ru_utime + children.ru_stime)


def per_request(used: CpuSeconds, requests: float) -> dict[str, float]:
    """{"server", "models", "client"}: CPU seconds per request served."""
    if requests <= 0:
        return {}
    return {part: seconds / requests for part, seconds in asdict(used).items()}


def _seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # ended meanwhile: its seconds are lost, not guessed
        return 0.0
    return float(times.user + times.system)
