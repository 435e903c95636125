"""Soak: the demo ensemble under twice its saturating load for a long time.

Builds the digits ensemble, serves it on the embedded tritonserver, finds the concurrency at
which throughput stops rising, then keeps perf_analyzer running at twice that concurrency for
`--duration-s` while this script
  - samples the resident memory of tritonserver and of every Python-backend stub (~every 10 s),
  - sends sampled tritonclient requests and checks each answer against an onnxruntime + numpy
    reference computed here, independently of the server.
Requests and errors are counted by the server itself (Triton's metrics endpoint); perf_analyzer
runs that fail count as errors too. Memory growth compares the first sample after the warm-up
with the last one, so start-up allocation is not counted as growth. If tritonserver dies,
`EmbeddedServer` restarts it (as `tritongen serve` does): the report lists every restart, and
the server's counters then cover only the time since the last one.

    .venv/bin/python benchmarks/soak.py [--duration-s 600] [--combiner ensemble|bls]
        [--workdir DIR]   # keeps (and reuses) the trained members in DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
from common import Run

from tritongen.bench.perf import perf_analyzer_binary, perf_environment
from tritongen.errors import TritongenError
from tritongen.examples.digits import load_digits_split, write_example
from tritongen.pipeline import build
from tritongen.render.repository import Combiner
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer, describe_exit, model_counters
from tritongen.spec.members import Ensemble

SWEEP = [1, 2, 4, 8, 16, 32, 64, 128, 256]
RISE = 1.10  # a doubling of concurrency that gains less than 10% means saturation
WINDOW_MS = 20_000  # one perf_analyzer run = 3 windows of this length
LOOSE = 1000  # stability %: a shared machine is never "stable"; we want load, not a verdict
UNSTABLE = "Failed to obtain stable measurement"


@dataclass
class Counts:
    perf_runs: int = 0
    perf_failures: list[str] = field(default_factory=list)
    sampled: int = 0
    sampled_wrong: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    model: str
    sweep: list[tuple[int, float]]  # (concurrency, requests/s)
    saturating: int
    concurrency: int
    elapsed_s: float
    served: int  # Triton's success counter over the soak
    failed: int  # Triton's failure counter over the soak
    counts: Counts
    memory: dict[int, MemorySeries]
    ready_at_end: bool
    restarts: list[str] = field(default_factory=list)  # one line per restart of tritonserver


@dataclass
class MemorySeries:
    label: str
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS bytes)

    def growth(self, warmup_s: float) -> tuple[int, int, float]:
        after = [rss for t, rss in self.samples if t >= warmup_s] or [self.samples[-1][1]]
        first, last = after[0], after[-1]
        return first, last, 100.0 * (last - first) / first


class Reference:
    """The mean of the members' softmax outputs, computed in this process."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.sessions = [
            ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"])
            for m in ensemble.members
        ]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for session in self.sessions:
            logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
            logits = logits.astype(np.float64)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            outputs.append(e / e.sum(axis=1, keepdims=True))
        return np.mean(outputs, axis=0)


def write_input_data(rows: np.ndarray, path: Path) -> Path:
    """perf_analyzer's --input-data file: real digits (its random bytes would be NaN or Inf
    as often as not, which the server rightly refuses)."""
    path.write_text(json.dumps({"data": [{"INPUT": row.tolist()} for row in rows]}))
    return path


def run_perf(url: str, model: str, concurrency: int, interval_ms: int, data: Path) -> str | None:
    """One perf_analyzer run (gRPC, batch 1, 3 windows): None when every request succeeded,
    else the end of its output. A run that only failed to call itself stable succeeded."""
    command = [
        str(perf_analyzer_binary()), "-m", model, "-u", url, "-i", "grpc",
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(interval_ms), "--max-trials", "3",
        "--stability-percentage", str(LOOSE), "--input-data", str(data),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=perf_environment()
    )
    output = result.stdout + result.stderr
    if result.returncode == 0 or (UNSTABLE in output and "error" not in output.lower()):
        return None
    return " ".join(output.split()[-60:])


def throughput_at(url: str, metrics_url: str, model: str, concurrency: int, data: Path) -> float:
    """Requests per second that the server itself counted during one perf_analyzer run."""
    before, started = server_counts(metrics_url, model), time.monotonic()
    failure = run_perf(url, model, concurrency, 4000, data)
    if failure:
        raise TritongenError(f"perf_analyzer failed at concurrency {concurrency}: {failure}")
    return (server_counts(metrics_url, model)[0] - before[0]) / (time.monotonic() - started)


def saturating_concurrency(
    url: str, metrics_url: str, model: str, data: Path
) -> tuple[int, list[tuple[int, float]]]:
    """The concurrency of the best throughput, once two doublings in a row fail to beat it by
    10% (one noisy point on a shared machine must not end the search)."""
    sweep: list[tuple[int, float]] = []
    best = (0, 0.0)
    for concurrency in SWEEP:
        sweep.append((concurrency, throughput_at(url, metrics_url, model, concurrency, data)))
        if sweep[-1][1] >= RISE * best[1]:
            best = sweep[-1]
        elif concurrency >= 4 * best[0]:
            break
    return best[0], sweep


def drive_load(
    url: str, model: str, concurrency: int, data: Path, deadline: float, counts: Counts
) -> None:
    """perf_analyzer runs back to back until `deadline`."""
    while time.monotonic() < deadline:
        failure = run_perf(url, model, concurrency, WINDOW_MS, data)
        if failure:
            counts.perf_failures.append(failure)
            time.sleep(1.0)  # the server may be restarting: one failure a second, not a spin
        counts.perf_runs += 1


def backend_processes(server_pid: int) -> dict[int, str]:
    """pid -> label for tritonserver and each Python-backend stub (labelled by its model)."""
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it died: EmbeddedServer is starting another
        return {}
    found = {server_pid: "tritonserver"}
    for child in children:
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if cmdline and "triton_python_backend_stub" in cmdline[0]:
            model = Path(cmdline[1]).parent.parent.name if len(cmdline) > 1 else "?"
            found[child.pid] = f"stub {model} (pid {child.pid})"
    return found


def sample_memory(server_pid: int, series: dict[int, MemorySeries], elapsed: float) -> None:
    for pid, label in backend_processes(server_pid).items():
        try:
            rss = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
        series.setdefault(pid, MemorySeries(label)).samples.append((elapsed, rss))


def check_sample(
    client: EnsembleClient,
    reference: Reference,
    pool: np.ndarray,
    rng: np.random.Generator,
    counts: Counts,
) -> None:
    rows = int(rng.integers(1, 33))
    batch = pool[rng.choice(len(pool), rows, replace=False)]
    counts.sampled += 1
    try:
        got = client.infer(batch)
    except (TritongenError, OSError) as exc:  # OSError: the server is gone
        counts.sampled_wrong.append(f"request failed: {exc}"[:300])
        return
    if not np.allclose(got, reference(batch), rtol=1e-4, atol=1e-5):
        counts.sampled_wrong.append(f"{rows} rows differ from the reference")


def server_counts(metrics_url: str, model: str) -> tuple[int, int]:
    """(successful, failed) requests of `model` according to Triton's own counters."""
    counters = model_counters(metrics_url)
    success, failure = (
        int(counters.get((f"nv_inference_request_{kind}", model), 0))
        for kind in ("success", "failure")
    )
    return success, failure


def watch(
    load: threading.Thread,
    server_pid: Callable[[], int],
    sample_every_s: float,
    series: dict[int, MemorySeries],
    check: Callable[[], None],
) -> None:
    """While `load` runs: a sampled request checked every second, memory every few."""
    started = next_memory = time.monotonic()
    while load.is_alive():
        now = time.monotonic()
        if now >= next_memory:
            sample_memory(server_pid(), series, now - started)
            next_memory += sample_every_s
        check()
        time.sleep(1.0)
    load.join()
    sample_memory(server_pid(), series, time.monotonic() - started)


def soak(args: argparse.Namespace, root: Path) -> list[str]:
    spec = root / "digits" / "ensemble.yaml"
    if not spec.is_file():  # training takes minutes on a busy machine: reuse a --workdir
        spec = write_example(root / "digits")
    planned, repository = build(spec, root / "repository", combiner=args.combiner, force=True)
    ensemble = planned.ensemble
    model = ensemble.spec.name
    reference = Reference(ensemble)
    pool = load_digits_split().test_x
    data = write_input_data(pool[:200], root / "perf_input.json")
    with EmbeddedServer(repository, log_path=root / "tritonserver.log") as server:
        metrics_url = f"127.0.0.1:{server.metrics_port}"
        saturating, sweep = saturating_concurrency(server.grpc_url, metrics_url, model, data)
        before = server_counts(metrics_url, model)
        counts, series, rng = Counts(), {}, np.random.default_rng(0)
        concurrency = 2 * saturating
        started = time.monotonic()
        deadline = started + args.duration_s
        load = threading.Thread(
            target=drive_load, args=(server.grpc_url, model, concurrency, data, deadline, counts)
        )
        load.start()
        client = EnsembleClient(server.http_url, model)
        check = functools.partial(check_sample, client, reference, pool, rng, counts)
        watch(load, lambda: server.pid, args.sample_every_s, series, check)
        elapsed = time.monotonic() - started
        ready = server.is_ready()
        after = server_counts(metrics_url, model) if ready else before  # dead: counters lost
        restarts = [
            f"{time.monotonic() - at:.0f} s before the end: pid {dead} {describe_exit(code)}; "
            f"restarted as pid {new}"
            for at, dead, code, new in server.restarts
        ]
    if restarts:  # a restarted server counts from zero
        before = (0, 0)
    served, failed = after[0] - before[0], after[1] - before[1]
    result = SoakResult(
        model, sweep, saturating, concurrency, elapsed, served, failed, counts, series, ready,
        restarts,
    )  # fmt: skip
    return render_report(args, result)


def render_report(args: argparse.Namespace, r: SoakResult) -> list[str]:
    counts, series = r.counts, r.memory
    errors = r.failed + len(counts.perf_failures) + len(counts.sampled_wrong)
    growths = {pid: s.growth(args.warmup_s) for pid, s in series.items()}
    worst = max(g[2] for g in growths.values())
    rising = r.saturating == SWEEP[-1]
    ceiling = ": the sweep's largest, throughput still rising" if rising else ""
    lines = [
        "Embedded tritonserver, members on the Python backend with onnxruntime.",
        "",
        "## Result",
        "",
        f"- duration under load: **{r.elapsed_s:.0f} s** at concurrency **{r.concurrency}** "
        f"(saturating concurrency {r.saturating}{ceiling}), {counts.perf_runs} back-to-back "
        "perf_analyzer runs",
        f"- requests served (Triton's counter): **{r.served}**, failed: **{r.failed}**",
        f"- perf_analyzer runs that failed: **{len(counts.perf_failures)}**",
        f"- sampled requests checked against the onnxruntime+numpy reference: **{counts.sampled}**,"
        f" wrong or failed: **{len(counts.sampled_wrong)}**",
        f"- errors in total: **{errors}**; server ready at the end: **{r.ready_at_end}**",
        f"- tritonserver restarts (it died and was started again): **{len(r.restarts)}**"
        + (" (requests counted since the last one)" if r.restarts else ""),
        f"- largest resident-memory growth after the {args.warmup_s:.0f} s warm-up: "
        f"**{worst:+.2f}%** (limit 5%)",
        "",
        "## Saturation sweep (perf_analyzer, gRPC, batch 1; requests/s counted by the server)",
        "",
        "| concurrency | throughput (requests/s) |",
        "|---|---|",
        *(f"| {c} | {t:.1f} |" for c, t in r.sweep),
        "",
        f"## Resident memory (RSS), first sample after {args.warmup_s:.0f} s vs last",
        "",
        "| process | RSS after warm-up MiB | RSS at end MiB | growth | samples |",
        "|---|---|---|---|---|",
    ]
    for pid, s in sorted(series.items(), key=lambda item: item[1].label):
        first, last, growth = growths[pid]
        lines.append(
            f"| {s.label} | {first / 2**20:.1f} | {last / 2**20:.1f} | {growth:+.2f}% | {len(s.samples)} |"
        )
    for title, items in (
        ("tritonserver restarts", r.restarts),
        ("perf_analyzer failures", counts.perf_failures),
        ("wrong samples", counts.sampled_wrong),
    ):
        if items:
            lines += ["", f"## {title}", "", *(f"- {item}" for item in items[:20])]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--sample-every-s", type=float, default=10)
    parser.add_argument("--combiner", choices=[c.value for c in Combiner], default="ensemble")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/soak.md"))
    parser.add_argument("--workdir", type=Path, help="Reuse the trained members kept here.")
    args = parser.parse_args()
    run = Run.start(__file__, args)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    root.mkdir(parents=True, exist_ok=True)
    title = (
        f"Soak: the demo ensemble ({args.combiner} combiner) at twice its saturating concurrency"
    )
    run.write(args.out, title, soak(args, root))


if __name__ == "__main__":
    main()
