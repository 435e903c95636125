"""What a call that lasts costs the threads waiting on it: a Python-backend model that sleeps a
fixed time per call (no CPU of its own) served on the embedded server, one request at a time
and with 32 in flight (batches of up to 16), and the CPU per request of tritonserver, the
model's process and perf_analyzer at each sleep. The serving cost's stand-in computes nothing;
this is why it is also measured with slow calls (docs/SERVING.md, *What one sample costs*).
Then the same threads waiting for the *next* call: the model sleeping 0 ms, sent requests at
fixed rates (evenly spaced, whatever is in flight), so that each instance sits idle between
calls for about the interval.

    .venv/bin/python benchmarks/waiting_calls.py [--sleeps-ms 0,2,8,32] [--rates 2000,500,200,50]
        [--trials 3]
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

from common import OUT, TRIALS, Run, mean_sd

from tritongen.bench.cpu_use import cpu_seconds, per_request
from tritongen.bench.perf import measure
from tritongen.serve.server import EmbeddedServer, model_counters

MODEL = "sleeper"
LEVELS = (1, 32)
PARTS = ("server", "models", "client")
CONFIG = """
name: "sleeper"
backend: "python"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 8 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { }
parameters { key: "sleep_ms" value: { string_value: "%s" } }
"""
SOURCE = textwrap.dedent("""
    import json
    import time

    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            parameters = json.loads(args["model_config"])["parameters"]
            self.sleep_s = float(parameters["sleep_ms"]["string_value"]) / 1000

        def execute(self, requests):
            time.sleep(self.sleep_s)
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]
                )
                for r in requests
            ]
""")


def sleeper_repository(root: Path, sleep_ms: float) -> Path:
    (root / MODEL / "1").mkdir(parents=True)
    (root / MODEL / "config.pbtxt").write_text(CONFIG % sleep_ms)
    (root / MODEL / "1" / "model.py").write_text(SOURCE)
    return root


def cpu_per_request(
    server: EmbeddedServer, concurrency: int, request_rate: float | None = None
) -> dict[str, float]:
    """CPU ms per request of each process over perf_analyzer's three 1.5 s windows, the
    requests per call the batcher formed and the median latency (`request_rate`: requests
    sent per second instead of `concurrency` in flight)."""
    before, counts = cpu_seconds(server.pid), model_counters(server.metrics_url)
    (point,) = measure(server.grpc_url, MODEL, [concurrency], interval_ms=1500, max_trials=3,
                       stability_percent=1000, request_rate=request_rate)  # fmt: skip
    used, after = cpu_seconds(server.pid).minus(before), model_counters(server.metrics_url)
    requests = after[("nv_inference_count", MODEL)] - counts.get(("nv_inference_count", MODEL), 0)
    calls = after[("nv_inference_exec_count", MODEL)] - counts.get(
        ("nv_inference_exec_count", MODEL), 0
    )
    found = {part: 1000 * s for part, s in per_request(used, requests).items()}
    return found | {"batch": requests / max(calls, 1), "p50_ms": point.p50_ms}


def measure_sleep(sleep_ms: float, trials: int) -> dict[int, list[dict[str, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        repository = sleeper_repository(Path(tmp) / "repo", sleep_ms)
        with EmbeddedServer(repository) as server:
            cpu_per_request(server, 1)  # warm-up
            return {c: [cpu_per_request(server, c) for _ in range(trials)] for c in LEVELS}


def measure_rates(rates: list[float], trials: int) -> dict[float, list[dict[str, float]]]:
    """The 0 ms sleeper at each request rate, `trials` times."""
    with tempfile.TemporaryDirectory() as tmp:
        repository = sleeper_repository(Path(tmp) / "repo", 0.0)
        with EmbeddedServer(repository) as server:
            cpu_per_request(server, 1)  # warm-up
            return {r: [cpu_per_request(server, 1, r) for _ in range(trials)] for r in rates}


def rates_markdown(found: dict[float, list[dict[str, float]]]) -> list[str]:
    lines = [
        "",
        "## Idle between calls",
        "",
        "| requests / s (evenly spaced) | interval, ms | p50 latency, ms "
        "| tritonserver ms / request | the model's process | perf_analyzer |",
        "|---|---|---|---|---|---|",
    ]
    for rate, trials in found.items():
        cells = [mean_sd([t[p] for t in trials], 3) for p in PARTS]
        p50 = mean_sd([t["p50_ms"] for t in trials], 2)
        lines.append(f"| {rate:g} | {1000 / rate:.1f} | {p50} | {' | '.join(cells)} |")
    return lines


def markdown(found: dict[float, dict[int, list[dict[str, float]]]]) -> list[str]:
    lines = []
    for level in LEVELS:
        lines += [
            "",
            f"## {level} in flight",
            "",
            "| sleep per call, ms | requests per call | tritonserver ms / request "
            "| the model's process | perf_analyzer |",
            "|---|---|---|---|---|",
        ]
        for sleep_ms, by_level in found.items():
            trials = by_level[level]
            cells = [mean_sd([t[p] for t in trials], 3) for p in PARTS]
            batch = mean_sd([t["batch"] for t in trials], 1)
            lines.append(f"| {sleep_ms:g} | {batch} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleeps-ms", default="0,2,8,32")
    parser.add_argument("--rates", default="2000,500,200,50")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--out", type=Path, default=OUT / "waiting_calls.md")
    args = parser.parse_args()
    run = Run.start(__file__, args)
    sleeps = [float(s) for s in args.sleeps_ms.split(",") if s]
    found = {s: measure_sleep(s, args.trials) for s in sleeps}
    rates = [float(r) for r in args.rates.split(",") if r]
    idle = measure_rates(rates, args.trials) if rates else {}
    body = [
        "",
        "CPU per request while a Python-backend model sleeps a fixed time in each call (it "
        "computes nothing): what the threads waiting on the call spend, by process, mean ± sd "
        f"over {args.trials} trials of perf_analyzer's three 1.5 s windows.",
        *(markdown(found) if found else []),
        *(rates_markdown(idle) if idle else []),
    ]
    data = {
        "sleeps": {str(s): {str(c): t for c, t in by.items()} for s, by in found.items()},
        "rates": {str(r): t for r, t in idle.items()},
    }
    run.write(args.out, "What waiting costs the threads on a call's path", body, data=data)


if __name__ == "__main__":
    main()
