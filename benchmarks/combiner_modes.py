"""Both combiner modes on the demo ensemble, compared in one run.

For each mode: throughput and p50/p99 latency at concurrency 1 and 8 (perf_analyzer, gRPC,
batch 1), and the combiner's overhead: p50 of the combined model minus p50 of its slowest member
served alone, at concurrency 1. Modes alternate over `--rounds` so that drift cancels.

    .venv/bin/python benchmarks/combiner_modes.py [--rounds 3] [--out benchmarks/combiner_modes.md]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import TRIALS, Run, mean_sd

from tritongen.bench.perf import PerfPoint, measure
from tritongen.examples.digits import write_example
from tritongen.pipeline import build
from tritongen.render.repository import Combiner
from tritongen.serve.server import EmbeddedServer

CONCURRENCIES = [1, 8]


def run_mode(
    spec: Path, root: Path, combiner: Combiner, interval_ms: int
) -> dict[str, list[PerfPoint]]:
    # One CPU instance per member in both modes, so that only the combiner differs.
    planned, repository = build(
        spec, root / combiner.value, combiner=combiner, quick=True, force=True
    )
    ensemble = planned.ensemble
    results: dict[str, list[PerfPoint]] = {}
    with EmbeddedServer(repository) as server:
        results["combined"] = measure(
            server.grpc_url, ensemble.spec.name, CONCURRENCIES, interval_ms=interval_ms
        )
        for member in ensemble.members:
            results[member.name] = measure(
                server.grpc_url, member.name, [1], interval_ms=interval_ms
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/combiner_modes.md"))
    args = parser.parse_args()
    run = Run.start(__file__, args)
    root = Path(tempfile.mkdtemp(prefix="combiner-modes-"))
    spec = write_example(root / "digits")
    runs: dict[Combiner, list[dict[str, list[PerfPoint]]]] = {c: [] for c in Combiner}
    for _ in range(args.rounds):
        for combiner in Combiner:
            runs[combiner].append(run_mode(spec, root, combiner, args.interval_ms))
    title = "Combiner modes on the demo ensemble (3 CPU members)"
    run.write(args.out, title, render_report(runs, args))


def render_report(
    runs: dict[Combiner, list[dict[str, list[PerfPoint]]]], args: argparse.Namespace
) -> list[str]:
    lines = [
        f"perf_analyzer, gRPC, batch 1; mean ± sd over {args.rounds} alternating trials.",
        "",
        "| mode | concurrency | throughput (infer/s) | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for combiner, mode_runs in runs.items():
        for index, concurrency in enumerate(CONCURRENCIES):
            points = [run["combined"][index] for run in mode_runs]
            lines.append(
                f"| {combiner.value} | {concurrency} | {mean_sd([p.throughput for p in points])} "
                f"| {mean_sd([p.p50_ms for p in points], 2)} | {mean_sd([p.p99_ms for p in points], 2)} |"
            )
    lines += [
        "",
        "Combiner overhead at concurrency 1 (p50 of the combined model − p50 of the slowest member "
        "alone, per trial; slowest by mean p50):",
        "",
    ]
    lines += [
        "| mode | combined p50 ms | slowest member | its p50 ms | overhead ms |",
        "|---|---|---|---|---|",
    ]
    for combiner, mode_runs in runs.items():
        combined = [trial["combined"][0].p50_ms for trial in mode_runs]
        members = {
            name: [trial[name][0].p50_ms for trial in mode_runs]
            for name in mode_runs[0]
            if name != "combined"
        }
        slowest = max(members, key=lambda name: sum(members[name]))
        overhead = [c - m for c, m in zip(combined, members[slowest], strict=True)]
        lines.append(
            f"| {combiner.value} | {mean_sd(combined, 2)} | {slowest} | "
            f"{mean_sd(members[slowest], 2)} | {mean_sd(overhead, 2)} |"
        )
    return lines


if __name__ == "__main__":
    main()
