"""Profiled single-instance throughput against the same member served alone on the embedded
server (one instance, perf_analyzer at concurrency 1, requests of batch b), in one run.

The difference, per call, is what serving through the Python backend costs beyond the
member's own run, in wall time at concurrency 1: overhead_s = b / served − b / profiled.
Beside it: the CPU seconds per call that the profile's `serving_cost` (measured by
`tritongen.bench.serving_cost` with a stand-in member) charges in the planner's CPU model.

    .venv/bin/python benchmarks/profile_vs_served.py [--example vision|digits] [--batches 1,4,16]
        [--trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import OUT, TRIALS, Run, mean_sd

from tritongen.bench.perf import measure
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.plan import Plan
from tritongen.profile.profile import ServingCost
from tritongen.render.repository import render_repository
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", choices=["vision", "digits"], default="vision")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args()
    run = Run.start(__file__, args)
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
    rows: list[Row] = []
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
                points = [
                    measure(server.grpc_url, member.name, [1], batch_size=batch, interval_ms=2000)[
                        0
                    ]
                    for _ in range(args.trials)
                ]
                profiled = profile.entries(member.name, cpu.device_class)[batch].throughput
                rows.append(
                    Row(member.name, batch, profiled, [p.throughput for p in points],
                        all(p.stable for p in points))
                )  # fmt: skip
    title = f"Profiled against served throughput ({args.example} ensemble, one instance, all cores)"
    run.write(OUT / f"profile_vs_served_{args.example}.md", title, markdown(rows, serving, args))


@dataclass(frozen=True)
class Row:
    """One member at one batch size: its profiled throughput and each trial's served one."""

    member: str
    batch: int
    profiled: float
    served: list[float]
    stable: bool

    def overheads_ms(self) -> list[float]:
        """Wall time per call beyond the member's own run, per trial."""
        return [(self.batch / s - self.batch / self.profiled) * 1000 for s in self.served]


def markdown(rows: list[Row], serving: ServingCost, args: argparse.Namespace) -> list[str]:
    lines = [
        f"Served at concurrency 1, {args.trials} trials of 2 s each; mean ± sd over them.",
        "",
        "| member | batch | profiled samples/s | served samples/s | served / profiled | overhead ms per call | serving_cost CPU ms per call | stable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        served = statistics.fmean(r.served)
        lines.append(
            f"| {r.member} | {r.batch} | {r.profiled:.1f} | {mean_sd(r.served)} | "
            f"{served / r.profiled:.2f} | {mean_sd(r.overheads_ms(), 2)} | "
            f"{1000 * serving.call_s(r.batch):.2f} | {'yes' if r.stable else 'no'} |"
        )
    overheads = [statistics.fmean(r.overheads_ms()) for r in rows]
    lines += ["", f"Overhead per call over members and batches: **{mean_sd(overheads, 2)} ms** "
              f"of wall time. The profile's {serving.describe()}.", ""]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
