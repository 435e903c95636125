"""Profiled single-instance throughput against the same member served alone on the embedded
server (one instance, perf_analyzer at concurrency 1, requests of batch b), in one run.

The difference, per call, is what serving through the Python backend costs beyond the
member's own run, in wall time at concurrency 1: overhead_s = b / served − b / profiled.
Beside it: the CPU seconds per call that the profile's `serving_cost` (measured by
`tritongen.bench.serving_cost` with a stand-in member) charges in the planner's CPU model.

    .venv/bin/python benchmarks/profile_vs_served.py [--example vision|digits] [--batches 1,4,16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from tritongen.bench.perf import measure
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.plan import Plan
from tritongen.profile.profile import ServingCost
from tritongen.render.repository import render_repository
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

OUT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", choices=["vision", "digits"], default="vision")
    parser.add_argument("--batches", default="1,4,16")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="profile-vs-served-"))
    if args.example == "vision":
        from tritongen.examples.vision import write_example
    else:
        from tritongen.examples.digits import write_example  # type: ignore[assignment]
    spec = load_spec(write_example(workdir / args.example))
    ensemble = load_ensemble(spec)
    inventory = detect_devices()
    cpu = inventory.cpu
    assert cpu is not None
    # Measured now, not from the cache: both sides of the comparison come from this run.
    profile, serving, _ = measure_profile(ensemble, inventory, use_cache=False, batch_sizes=batches)
    rows = []
    for batch in batches:
        # Every member once, one instance with all cores as profiled, at max_batch_size = batch.
        plan = Plan(
            allocation={m.name: {cpu.id: 1} for m in ensemble.members},
            batch_size={m.name: batch for m in ensemble.members},
            threads={m.name: cpu.cores or 1 for m in ensemble.members},
        )
        repository = render_repository(ensemble, plan, inventory, workdir / f"b{batch}", force=True)
        with EmbeddedServer(repository) as server:
            for member in ensemble.members:
                point = measure(
                    server.grpc_url, member.name, [1], batch_size=batch, interval_ms=2000
                )[0]
                profiled = profile.entries(member.name, cpu.device_class)[batch].throughput
                overhead_ms = (batch / point.throughput - batch / profiled) * 1000
                rows.append(
                    (member.name, batch, profiled, point.throughput, overhead_ms, point.stable)
                )
    write_report(rows, serving, args)


def write_report(
    rows: list[tuple[str, int, float, float, float, bool]],
    serving: ServingCost,
    args: argparse.Namespace,
) -> None:
    lines = [
        f"# Profiled against served throughput ({args.example} ensemble, one instance, all cores)",
        "",
        f"Command: `.venv/bin/python benchmarks/profile_vs_served.py --example {args.example} --batches {args.batches}`"
        f" — {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| member | batch | profiled samples/s | served samples/s | served / profiled | overhead ms per call | serving_cost CPU ms per call | stable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, batch, profiled, served, overhead, stable in rows:
        lines.append(
            f"| {name} | {batch} | {profiled:.1f} | {served:.1f} | {served / profiled:.2f} | {overhead:.2f} | {1000 * serving.call_s(batch):.2f} | {'yes' if stable else 'no'} |"
        )
    overheads = [r[4] for r in rows]
    lines += ["", f"Median overhead per call: **{statistics.median(overheads):.2f} ms** of wall "
              f"time. The profile's {serving.describe()}.", ""]  # fmt: skip
    (OUT / f"profile_vs_served_{args.example}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
