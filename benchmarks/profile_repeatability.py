"""Is a profile repeatable? Profile the demo ensemble several times in a row (no cache) and
compare every entry: throughput, memory and the per-sample CPU cost, with each run's wall time.

    .venv/bin/python benchmarks/profile_repeatability.py [--runs 3] [--spec SPEC]
        [--out benchmarks/profile_repeatability.md]

Without --spec it trains the demo's three digit classifiers (a few epochs: weights do not
change speed) into a temporary folder. Target: every entry within 10%, a profile < 2 min.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import TRIALS, Run, mean_sd

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
    """One profile entry across the runs."""

    member: str
    batch: int
    threads: str  # "all" (the served entry: intra-op threads = cores) or "1"
    throughputs: list[float]
    memory: list[float]
    contention: list[float | None]

    @property
    def deviation(self) -> float:
        """The largest |run k / run 1 - 1|."""
        return max(abs(t / self.throughputs[0] - 1) for t in self.throughputs[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=TRIALS)
    parser.add_argument("--spec", type=Path, help="ensemble spec (default: the demo's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    run = Run.start(__file__, args)
    with tempfile.TemporaryDirectory() as folder:
        spec_path = args.spec or demo_spec(Path(folder))
        ensemble = load_ensemble(load_spec(spec_path))
        inventory = detect_devices()
        runs = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = profile_ensemble(ensemble, inventory, use_cache=False, progress=True)
            runs.append((result, time.perf_counter() - started))
        traces = {m.name: thread_trace(m, inventory.cpu.cores or 1) for m in ensemble.members}
    source = spec_path if args.spec else "the demo (tritongen.examples.digits)"
    run.write(args.out, "Profile repeatability", [*render(source, runs), *render_traces(traces)])


def demo_spec(folder: Path) -> Path:
    """Imported here, not at the top: spawned profiling children re-import this script, and
    torch would cost each of them seconds and memory."""
    from tritongen.examples.digits import write_example

    return write_example(folder, epochs=2)


def compare(profiles: list[Profile]) -> list[Row]:
    """Every CPU entry of the first run that every run has, at all cores (what the profile
    serves) and at one thread."""
    rows = []
    for threads in ("all", "1"):
        for member in profiles[0].members:
            for batch in profiles[0].entries(member, "cpu"):
                found = [p.entries(member, "cpu").get(batch) for p in profiles]
                entries = [e for e in found if e is not None]
                if len(entries) < len(found):
                    continue
                one = [e.extra.get("throughput_by_threads", {}) for e in entries]
                if threads == "1" and not all("1" in t for t in one):
                    continue
                throughputs = (
                    [e.throughput for e in entries] if threads == "all" else [t["1"] for t in one]
                )
                rows.append(
                    Row(member, batch, threads, throughputs,
                        [e.memory_bytes for e in entries],
                        [e.extra.get("contention") for e in entries])
                )  # fmt: skip
    return rows


def within(rows: list[Row]) -> str:
    deviations = [r.deviation for r in rows]
    inside = sum(d <= TOLERANCE for d in deviations)
    return (
        f"{inside} of {len(rows)} within {TOLERANCE:.0%} of run 1 in every run; median of the "
        f"largest |run k/run 1 - 1| = {statistics.median(deviations):.1%}, "
        f"max = {max(deviations):.1%}"
    )


def render(source: object, runs: list[tuple[Profile, float]]) -> list[str]:
    profiles = [profile for profile, _ in runs]
    first = profiles[0]
    rows = compare(profiles)
    lines = [
        f"{len(runs)} profiles of {source} taken one after the other, no cache, default settings "
        f"({first.extra['point_s']} s timed per point in {first.extra['rounds']} rounds, "
        "batch sizes 1..32, CPU with intra-op threads = cores and again with 1 thread).",
        "",
        f"- wall time per profile: {mean_sd([wall for _, wall in runs])} s (target < 120 s)",
        "- load average (1 min) at start/end of each run: "
        + "; ".join(str(p.extra["load_average_1min"]) for p in profiles),
        "- throughput entries at all cores (the profile's served entries): "
        + within([r for r in rows if r.threads == "all"]),
        "- throughput entries at one thread (what the CPU serving model uses): "
        + within([r for r in rows if r.threads == "1"]),
        "",
        "| member | batch | threads | samples/s, mean ± sd | largest deviation from run 1 "
        "| memory max/min | contention per run |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        flag = "" if r.deviation <= TOLERANCE else " ⚠"
        lines.append(
            f"| {r.member} | {r.batch} | {r.threads} | {mean_sd(r.throughputs, 0)} "
            f"| {r.deviation:.1%}{flag} | {max(r.memory) / min(r.memory):.3f} "
            f"| {' / '.join(_share(c) for c in r.contention)} |"
        )
    lines += ["", "Per-sample CPU cost on one thread at the best batch size (the bound's c_m):", ""]
    lines += ["| member | µs, mean ± sd | batch per run |", "|---|---:|---|"]
    for member in first.cpu_cost_s_per_sample:
        costs = [p.cpu_cost_s_per_sample[member] * 1e6 for p in profiles]
        batches = " / ".join(str(p.extra["cpu_cost_batch"][member]) for p in profiles)
        lines.append(f"| {member} | {mean_sd(costs, 2)} | {batches} |")
    return [*lines, "", *_notes()]


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


def render_traces(traces: dict[str, dict[int, list[float]]]) -> list[str]:
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
    return lines


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
