"""Run Triton's own load generator, perf_analyzer, against a served model.

The `tritonclient` wheel ships the binary; it needs Debian's libb64 and the CUDA runtime
library from PyPI's `nvidia-cuda-runtime-cu12`, which we put on its LD_LIBRARY_PATH.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tritongen.errors import TritongenError
from tritongen.spec.members import Ensemble


@dataclass(frozen=True)
class PerfPoint:
    concurrency: int
    throughput: float  # inferences (rows) per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    stable: bool = True  # False: perf_analyzer's stability test never passed (noisy machine)
    batches: dict[str, float] = field(default_factory=dict)  # model -> mean batch it executed
    runnable: float | None = None  # mean threads runnable on the machine meanwhile (RunQueue)
    # CPU seconds per request meanwhile: tritonserver, its model processes, the load generator
    cpu_s_per_request: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def perf_analyzer_binary() -> Path:
    found = Path(sys.executable).parent / "perf_analyzer"
    if found.is_file():
        return found
    which = shutil.which("perf_analyzer")
    if which is None:
        raise TritongenError(
            "perf_analyzer not found; install it with `pip install tritonclient[all]==2.51.0`"
        )
    return Path(which)


def perf_environment() -> dict[str, str]:
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is not None and spec.submodule_search_locations:
        lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p
        )
    return env


# On a shared machine a window can miss perf_analyzer's stability test however long it is;
# then the point is measured again with the test switched off and marked unstable.
UNCHECKED_STABILITY = 1000


def measure(
    url: str,
    model: str,
    concurrencies: list[int],
    *,
    protocol: str = "grpc",
    batch_size: int = 1,
    interval_ms: int = 3000,
    stability_percent: int = 20,
    max_trials: int = 6,
    shape: str | None = None,
    shared_memory: str | None = None,
    input_data: str = "zero",
    timeout_s: float = 600,
    request_rate: float | None = None,
) -> list[PerfPoint]:
    """Throughput and latency percentiles of `model` at each concurrency, one run each.
    `shared_memory="system"` passes tensors through POSIX shared memory instead of the wire
    (client and server on one host). `input_data` is perf_analyzer's: "zero", or a JSON file
    (`input_data_for`). `request_rate`: instead of concurrencies, one run that sends that many
    requests per second, evenly spaced (its point's concurrency is 0)."""
    options = [
        "-m", model,
        "-u", url,
        "-i", protocol,
        "-b", str(batch_size),
        "--measurement-interval", str(interval_ms),
        "--max-trials", str(max_trials),
        "--percentile", "99",
        # Not perf_analyzer's random bytes: as float32 those include NaN and Inf, which the
        # combiner rightly refuses. Zeros, or a file where zeros are wrong (input_data_for).
        "--input-data", input_data,
        *(["--shape", shape] if shape else []),
        *(["--shared-memory", shared_memory] if shared_memory else []),
    ]  # fmt: skip
    loads = [_load(c, None) for c in concurrencies]
    if request_rate is not None:
        loads = [_load(0, request_rate)]
    points = []
    for load in loads:
        try:
            points.append(_run(options, load, stability_percent, timeout_s))
        except UnstableMeasurement:
            point = _run(options, load, UNCHECKED_STABILITY, timeout_s)
            points.append(replace(point, stable=False))
    return points


def _load(concurrency: int, request_rate: float | None) -> list[str]:
    """perf_analyzer's options for `concurrency` requests in flight, or `request_rate`
    requests per second sent at even intervals whatever is in flight."""
    if request_rate is None:
        return ["--concurrency-range", f"{concurrency}:{concurrency}"]
    rate = f"{request_rate:.3f}"
    return ["--request-rate-range", f"{rate}:{rate}", "--request-distribution", "constant"]


def input_data_for(ensemble: Ensemble, folder: Path) -> str:
    """perf_analyzer's --input-data for the ensemble's combined model: "zero" for float inputs
    (the members' compute does not depend on the values), else a JSON file with one sample of
    the values tritongen feeds each input (an attention mask of zeros would give NaN, and an
    id the spec bounds must stay in range). perf_analyzer repeats the sample for each row."""
    if all(i.is_float for i in ensemble.inputs) and not ensemble.input_values:
        return "zero"
    sample = ensemble.sample_inputs(1)
    data = {"data": [{name: array.reshape(-1).tolist() for name, array in sample.items()}]}
    path = folder / "input_data.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


class RunQueue:
    """Samples how many threads are runnable on this machine (the kernel's instantaneous count
    in /proc/loadavg, less this sampler) while a measurement runs: over the cores, how much
    slower each thread runs than alone. A context manager; `mean` once it has ended."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunQueue:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    def _sample(self) -> None:
        path = Path("/proc/loadavg")
        if not path.exists():
            return
        while not self._stop.wait(self.period_s):
            running = int(path.read_text().split()[3].split("/")[0])
            self.samples.append(max(0, running - 1))


def served_batches(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    """The mean batch each model executed between two snapshots of Triton's counters
    (`model_counters`): the samples it inferred over the executions it ran."""
    batches = {}
    for (metric, model), executions in after.items():
        if metric != "nv_inference_exec_count":
            continue
        calls = executions - before.get((metric, model), 0.0)
        samples = after.get(("nv_inference_count", model), 0.0)
        samples -= before.get(("nv_inference_count", model), 0.0)
        if calls > 0:
            batches[model] = samples / calls
    return batches


class UnstableMeasurement(TritongenError):
    pass


def _run(options: list[str], load: list[str], stability: int, timeout_s: float) -> PerfPoint:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.csv"
        command = [
            str(perf_analyzer_binary()),
            *options,
            *load,
            "--stability-percentage", str(stability),
            "-f", str(report),
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=perf_environment()
        )
        output = result.stdout + result.stderr
        if "Failed to obtain stable measurement" in output:
            raise UnstableMeasurement(f"{' '.join(load[:2])}: no stable window")
        if result.returncode != 0 or not report.exists():
            tail = " ".join(output.split()[-40:])
            raise TritongenError(f"perf_analyzer failed (exit {result.returncode}): {tail}")
        return parse_report(report.read_text())[0]


def parse_report(text: str) -> list[PerfPoint]:
    """perf_analyzer's CSV (-f): latencies in microseconds; a run at a request rate has no
    concurrency (0)."""
    points = []
    for row in csv.DictReader(text.splitlines()):
        points.append(
            PerfPoint(
                concurrency=int(row.get("Concurrency") or 0),
                throughput=float(row["Inferences/Second"]),
                p50_ms=float(row["p50 latency"]) / 1000,
                p90_ms=float(row["p90 latency"]) / 1000,
                p99_ms=float(row["p99 latency"]) / 1000,
            )
        )
    return points
