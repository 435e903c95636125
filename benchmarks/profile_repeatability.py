"""Is a profile repeatable? Profile the demo ensemble twice in a row (no cache) and compare
every entry: throughput, memory and the per-sample CPU cost, with each run's wall time.

    python benchmarks/profile_repeatability.py [--spec SPEC] [--out benchmarks/profile_repeatability.md]

Without --spec it trains the demo's three digit classifiers (a few epochs: weights do not
change speed) into a temporary folder. Target: every entry within 10%, a profile < 2 min.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritongen.profile.profile import Profile
from tritongen.profile.profiler import profile_ensemble
from tritongen.profile.runtime import build_session, session_settings
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import MemberModel, load_ensemble

TOLERANCE = 0.10
TRACE_BATCH = 8
TRACE_ROUNDS = 12
TRACE_ROUND_S = 0.5


@dataclass(frozen=True)
class Row:
    member: str
    batch: int
    threads: str  # "all" (the served entry: intra-op threads = cores) or "1"
    first: float
    second: float
    memory_ratio: float
    contention: tuple[float | None, float | None]

    @property
    def ratio(self) -> float:
        return self.second / self.first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, help="ensemble spec (default: the demo's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        spec_path = args.spec or demo_spec(Path(folder))
        ensemble = load_ensemble(load_spec(spec_path))
        inventory = detect_devices()
        runs = []
        for _ in range(2):
            started = time.perf_counter()
            result = profile_ensemble(ensemble, inventory, use_cache=False, progress=True)
            runs.append((result, time.perf_counter() - started))
        traces = {m.name: thread_trace(m, inventory.cpu.cores or 1) for m in ensemble.members}
    report = render(spec_path if args.spec else "the demo (tritongen.examples.digits)", runs)
    report += render_traces(traces)
    args.out.write_text(report)
    print(report)


def demo_spec(folder: Path) -> Path:
    """Imported here, not at the top: spawned profiling children re-import this script, and
    torch would cost each of them seconds and memory."""
    from tritongen.examples.digits import write_example

    return write_example(folder, epochs=2)


def compare(first: Profile, second: Profile) -> list[Row]:
    """Every CPU entry at all cores (what the profile serves) and at one thread."""
    rows = []
    for threads in ("all", "1"):
        for member, by_class in first.members.items():
            for batch, a in by_class.get("cpu", {}).items():
                b = second.entries(member, "cpu").get(batch)
                if b is None:
                    continue
                one = (
                    a.extra.get("throughput_by_threads", {}),
                    b.extra.get("throughput_by_threads", {}),
                )
                if threads == "1" and not all("1" in t for t in one):
                    continue
                rows.append(
                    Row(
                        member,
                        batch,
                        threads,
                        a.throughput if threads == "all" else one[0]["1"],
                        b.throughput if threads == "all" else one[1]["1"],
                        b.memory_bytes / a.memory_bytes,
                        (a.extra.get("contention"), b.extra.get("contention")),
                    )
                )
    return rows


def within(rows: list[Row]) -> str:
    deviations = [abs(r.ratio - 1) for r in rows]
    inside = sum(d <= TOLERANCE for d in deviations)
    return (
        f"{inside} of {len(rows)} within {TOLERANCE:.0%}; median |run2/run1 - 1| = "
        f"{statistics.median(deviations):.1%}, max = {max(deviations):.1%}"
    )


def render(source: object, runs: list[tuple[Profile, float]]) -> str:
    (first, wall1), (second, wall2) = runs
    rows = compare(first, second)
    lines = [
        "# Profile repeatability",
        "",
        "`python benchmarks/profile_repeatability.py` — two profiles of "
        f"{source} taken one after the other, no cache, default settings "
        f"({first.extra['point_s']} s timed per point in {first.extra['rounds']} rounds, "
        "batch sizes 1..32, CPU with intra-op threads = cores and again with 1 thread).",
        "",
        f"- machine: {os.cpu_count()} CPUs (shared with other users), onnxruntime "
        f"{first.extra['onnxruntime']}",
        f"- wall time: run 1 {wall1:.1f} s, run 2 {wall2:.1f} s (target < 120 s)",
        f"- load average (1 min) at start/end: run 1 {first.extra['load_average_1min']}, "
        f"run 2 {second.extra['load_average_1min']}",
        "- throughput entries at all cores (the profile's served entries): "
        + within([r for r in rows if r.threads == "all"]),
        "- throughput entries at one thread (what the CPU serving model uses): "
        + within([r for r in rows if r.threads == "1"]),
        "",
        "| member | batch | threads | run 1 samples/s | run 2 samples/s | run2/run1 "
        "| memory run2/run1 | contention run 1 / run 2 |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        flag = "" if abs(r.ratio - 1) <= TOLERANCE else " ⚠"
        lines.append(
            f"| {r.member} | {r.batch} | {r.threads} | {r.first:,.0f} | {r.second:,.0f} "
            f"| {r.ratio:.3f}{flag} | {r.memory_ratio:.3f} "
            f"| {_share(r.contention[0])} / {_share(r.contention[1])} |"
        )
    lines += ["", "Per-sample CPU cost on one thread at the best batch size (the bound's c_m):", ""]
    lines += [
        "| member | run 1 µs (batch) | run 2 µs (batch) | run2/run1 |",
        "|---|---:|---:|---:|",
    ]
    for member, cost in first.cpu_cost_s_per_sample.items():
        again = second.cpu_cost_s_per_sample[member]
        b1, b2 = first.extra["cpu_cost_batch"][member], second.extra["cpu_cost_batch"][member]
        lines.append(
            f"| {member} | {cost * 1e6:.2f} ({b1}) | {again * 1e6:.2f} ({b2}) "
            f"| {again / cost:.3f} |"
        )
    lines += ["", *_notes()]
    return "\n".join(lines) + "\n"


def thread_trace(member: MemberModel, cores: int) -> dict[int, list[float]]:
    """Samples/s of one session over consecutive rounds, at all cores and at one thread:
    whether a figure moves within a single run, with nothing else running."""
    import numpy as np

    feed = {i.name: np.ones((TRACE_BATCH, *i.dims), i.dtype) for i in member.inputs}
    trace = {}
    for threads in sorted({cores, 1}, reverse=True):
        session = build_session(str(member.path), session_settings("cpu", threads))
        for _ in range(20):
            session.run(None, feed)
        trace[threads] = [_rate(session, feed) for _ in range(TRACE_ROUNDS)]
    return trace


def _rate(session: Any, feed: dict[str, Any]) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < TRACE_ROUND_S:
        session.run(None, feed)
        calls += 1
    return calls * TRACE_BATCH / (time.perf_counter() - started)


def render_traces(traces: dict[str, dict[int, list[float]]]) -> str:
    lines = [
        "",
        f"## One session, {TRACE_ROUNDS} consecutive rounds of {TRACE_ROUND_S} s "
        f"(batch {TRACE_BATCH})",
        "",
        "| member | threads | samples/s per round (thousands) | max/min |",
        "|---|---:|---|---:|",
    ]
    for member, by_threads in traces.items():
        for threads, rates in by_threads.items():
            shown = " ".join(f"{r / 1000:.0f}" for r in rates)
            lines.append(f"| {member} | {threads} | {shown} | {max(rates) / min(rates):.2f} |")
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _notes() -> list[str]:
    return [
        "Contention is the share of our threads' time spent waiting for a core while other "
        "processes ran (Linux schedstat); rounds above 5% are timed again within a bounded "
        "budget, and what remains is recorded in each entry. Entries marked ⚠ differ by more "
        "than 10%.",
    ]


if __name__ == "__main__":
    main()
