"""Where the CPU goes when tritongen's plan (of the vision example, or another) is served: CPU
milliseconds per inference, per process, against the members' profiled compute (the bound's
Σ c_m).

One run: profile (cached) and plan the vision ensemble, serve the plan on the embedded server,
drive it with perf_analyzer at one concurrency for a fixed time, and read the CPU time of
every process before and after (tritonserver, each Python-backend stub, perf_analyzer) and
the inference counts from Triton's metrics. Then, optionally, sample the stubs with py-spy
(`pip install py-spy`; Python stacks: onnxruntime's `run` against the rest of the stub) and
tritonserver with `perf` (C++: time per shared library).

    .venv/bin/python benchmarks/where_time_goes.py [--example vision] [--concurrency 16]
        [--seconds 20] [--trials 3]
        [--no-sampling] [--out benchmarks/where_time_goes.md]
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
from common import TRIALS, Run, mean_sd

from tritongen.bench.compare import cpu_bound
from tritongen.bench.perf import input_data_for, perf_analyzer_binary, perf_environment
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.search import make_plan
from tritongen.render.repository import group_model_name, render_repository
from tritongen.report import shape_line
from tritongen.serve.server import EmbeddedServer, model_counters
from tritongen.serve.watchdog import stub_processes
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


@dataclass
class Process:
    process: psutil.Process
    label: str

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system


def server_processes(server_pid: int) -> list[Process]:
    """tritonserver and its Python-backend stubs, each stub labelled with its model."""
    server = Process(psutil.Process(server_pid), "tritonserver (C++: gRPC, schedulers, ensemble)")
    return [server, *(Process(p, f"stub: {model}") for model, p in stub_processes(server_pid))]


def drive(
    server: EmbeddedServer, model: str, concurrency: int, seconds: float, input_data: str
) -> float:
    """Run perf_analyzer for about `seconds`; return its CPU seconds (from wait4's rusage)."""
    command = [
        str(perf_analyzer_binary()), "-m", model, "-u", server.grpc_url, "-i", "grpc",
        "--input-data", input_data, "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(int(seconds * 1000 / 3)), "--max-trials", "3",
        "--stability-percentage", "1000",
    ]  # fmt: skip
    child = subprocess.Popen(command, env=perf_environment(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"perf_analyzer failed with exit {child.returncode}")
    return usage.ru_utime + usage.ru_stime


def pyspy_shares(pid: int, seconds: float) -> dict[str, float]:
    """Share of a stub's non-idle Python samples inside onnxruntime's run, numpy, or the rest."""
    spy = _pyspy()
    assert spy is not None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        subprocess.run(
            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        counts: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            counts[_stack_kind(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {kind: n / total for kind, n in counts.most_common()}


def _pyspy() -> str | None:
    """py-spy (`pip install py-spy`), on PATH or beside this Python; None when absent."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _stack_kind(stack: str) -> str:
    if "onnxruntime_inference_collection.py" in stack:
        return "onnxruntime run"
    if not stack.strip():  # busy with no Python frame: the stub's C++ message loop
        return "stub C++ (IPC, shared-memory tensors)"
    if "numpy" in stack.split(";")[-1]:
        return "numpy"
    return "model.py Python"


def perf_dso_shares(pid: int, seconds: float) -> list[tuple[float, str]]:
    """tritonserver's CPU samples by shared library (`perf record` + `perf report --sort dso`)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-F", "499", "-p", str(pid), "-o", str(data), "--",
                        "sleep", str(seconds)], check=True, capture_output=True)  # fmt: skip
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rows = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if match:
            rows.append((float(match.group(1)), match.group(2)))
    return rows[:8]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="vision", help="vision, heavy, text or digits")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--no-sampling", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/where_time_goes.md"))
    args = parser.parse_args()
    run = Run.start(__file__, args)
    workdir = Path(tempfile.mkdtemp(prefix="where-time-goes-"))
    example = importlib.import_module(f"tritongen.examples.{args.example}")
    spec = load_spec(example.write_example(workdir / args.example))
    ensemble = load_ensemble(spec)
    input_data = input_data_for(ensemble, workdir)
    inventory = detect_devices()
    profile, _, _ = measure_profile(ensemble, inventory)
    plan = make_plan(spec, inventory, profile)
    bound = cpu_bound(profile, inventory)
    compute_ms = {m: 1000 * c for m, c in profile.cpu_cost_s_per_sample.items()}
    repository = render_repository(ensemble, plan, inventory, workdir / "repo", force=True)

    with EmbeddedServer(repository) as server:
        drive(server, spec.name, args.concurrency, 3, input_data)  # warm-up
        processes = server_processes(server.pid)
        trials = [
            one_trial(server, processes, spec.name, args, input_data) for _ in range(args.trials)
        ]
        sampling = None
        if not args.no_sampling:
            sampling = sample(server, processes, ensemble, args, input_data)

    labels = [p.label for p in processes] + ["perf_analyzer (client, gRPC)"]
    spread = {label: [t.cpu_ms[i] for t in trials] for i, label in enumerate(labels)}
    rows = [(label, sum(values) / len(values)) for label, values in spread.items()]
    delta = {k: sum(t.delta.get(k, 0) for t in trials) for k in trials[0].delta}
    inferences = sum(t.inferences for t in trials)
    wall_s = sum(t.wall_s for t in trials)
    title = f"Where the CPU goes: tritongen's {args.example} plan, served"
    body = report_lines(
        args, ensemble, plan, bound, compute_ms, rows, spread, delta, inferences, wall_s, sampling
    )
    run.write(args.out, title, body)


@dataclass(frozen=True)
class Trial:
    """One timed drive of the served plan: CPU ms per inference of each process, the client's
    last, and Triton's counters over it."""

    cpu_ms: list[float]
    delta: dict
    inferences: float
    wall_s: float


def one_trial(server, processes, model: str, args, input_data: str) -> Trial:
    before = [p.cpu_seconds() for p in processes]
    counts_before = model_counters(server.metrics_url)
    started = time.perf_counter()
    client_s = drive(server, model, args.concurrency, args.seconds, input_data)
    wall_s = time.perf_counter() - started
    after = [p.cpu_seconds() for p in processes]
    counts_after = model_counters(server.metrics_url)
    delta = {k: counts_after[k] - counts_before.get(k, 0) for k in counts_after}
    inferences = delta[("nv_inference_count", model)]
    cpu_ms = [1000 * (a - b) / inferences for a, b in zip(after, before, strict=True)]
    return Trial([*cpu_ms, 1000 * client_s / inferences], delta, inferences, wall_s)


def sample(server, processes, ensemble, args, input_data: str) -> dict:
    """py-spy on each stub and perf on tritonserver, while perf_analyzer loads the server (a
    load that fails raises here: samples of an idle server would read as a finding)."""
    seconds = 8
    result: dict = {"stubs": {}, "server": []}
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(
            drive, server, ensemble.spec.name, args.concurrency, seconds * 6, input_data
        )
        time.sleep(2)
        if _pyspy():
            for process in processes[1:]:  # instances of one model share a label: add the pid
                label = f"{process.label} (pid {process.process.pid})"
                result["stubs"][label] = pyspy_shares(process.process.pid, seconds)
        if shutil.which("perf"):
            result["server"] = perf_dso_shares(server.pid, seconds)
        load.result()
    return result


def gap_lines(rows: list[tuple[str, float]], compute_ms: float) -> list[str]:
    """The CPU per inference above the members' profiled compute, by where it is spent."""
    by_label = dict(rows)
    stubs = sum(ms for label, ms in rows if label.startswith("stub:") and "combine" not in label)
    combine = sum(ms for label, ms in rows if label.startswith("stub:") and "combine" in label)
    parts = {
        "member (or group) stubs beyond the profiled compute (Python-backend calls, batches "
        "smaller than the best)": stubs - compute_ms,
        "tritonserver (gRPC, ensemble scheduler, tensor copies)": next(
            ms for label, ms in by_label.items() if label.startswith("tritonserver")
        ),
        "combine step": combine,
        "perf_analyzer (the client shares the cores)": next(
            ms for label, ms in by_label.items() if label.startswith("perf_analyzer")
        ),
    }
    return ["Above the compute, per inference:", ""] + [
        f"- {name}: {ms:.3f} ms" for name, ms in parts.items()
    ]


def report_lines(
    args, ensemble, plan, bound, compute_ms, rows, spread, delta, inferences, wall_s, sampling
) -> list[str]:
    cores = os.cpu_count()
    total_ms = sum(ms for _, ms in rows)
    totals = [sum(values) for values in zip(*spread.values(), strict=True)]
    lines = [
        f"Plan: {shape_line(plan)}; batch sizes {plan.batch_size}, threads {plan.threads}. "
        f"{inferences:.0f} inferences in {wall_s:.1f} s over {args.trials} trials "
        f"(about {inferences / wall_s:.0f}/s, warm-up and ramp included).",
        "",
        "CPU milliseconds per inference, per process (utime + stime from /proc; the client's "
        "from wait4), mean ± sd over the trials:",
        "",
        "| process | CPU ms / inference | share |",
        "|---|---|---|",
    ]
    lines += [
        f"| {label} | {mean_sd(spread[label], 3)} | {ms / total_ms:.0%} |" for label, ms in rows
    ]
    lines += [f"| **total** | **{mean_sd(totals, 3)}** | |", ""]
    members = sum(compute_ms.values())
    lines += [
        f"Profiled compute (one thread, best batch), Σ c_m = **{members:.3f} ms** per sample "
        f"→ bound {bound:.1f}/s on {cores} cores. Everything above that in the total is "
        f"serving cost: at {total_ms:.3f} ms per inference the {cores} cores can give at most "
        f"**{1000 * cores / total_ms:.0f}/s** ({1000 * cores / total_ms / bound:.2f} of the "
        "bound).",
        "",
        *gap_lines(rows, members),
        "",
        "| member | profiled c_m ms | served in | batches run | mean batch |",
        "|---|---|---|---|---|",
    ]
    for member, ms in compute_ms.items():
        group = plan.group_of(member)  # a group's members run on the group's batches
        model = member if group is None else group_model_name(ensemble, plan, group)
        runs = delta.get(("nv_inference_exec_count", model), 0)
        count = delta.get(("nv_inference_count", model), 0)
        lines.append(f"| {member} | {ms:.3f} | {model} | {runs:.0f} | {count / max(runs, 1):.1f} |")
    if sampling:
        lines += ["", "## Inside the stubs (py-spy, non-idle samples)", ""]
        for label, shares in sampling["stubs"].items():
            top = ", ".join(f"{kind} {share:.0%}" for kind, share in list(shares.items())[:4])
            lines.append(f"- {label}: {top or 'no Python sample (idle, or py-spy saw none)'}")
        if sampling["server"]:
            lines += ["", "## Inside tritonserver (perf, samples by shared library)", ""]
            lines += [f"- {share:.1f}% {dso}" for share, dso in sampling["server"]]
    return lines


if __name__ == "__main__":
    main()
