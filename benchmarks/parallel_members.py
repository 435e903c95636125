"""A group's members side by side against one after another, and against the members served
separately, on the same machine in one run: the latency of a lone request (p50 at concurrency
1) and the best throughput, served on the embedded tritonserver and measured with perf_analyzer,
each beside the serving model's prediction.

    .venv/bin/python benchmarks/parallel_members.py [--examples heavy,vision,digits] [--rounds 2]

For each example: its profile, tritongen's plan (a group, side by side where that pays), the
same plan with the group's members run the other way, and the separate plan. Rounds alternate
the order so that drift cancels. Writes benchmarks/parallel_members.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prediction import profiled_example

from tritongen.bench.compare import levels_markdown, run_bench
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan

OUT = Path(__file__).resolve().parent
LEVELS = [1, 8, 64]


def flipped(plan: Plan) -> tuple[str, Plan]:
    """`plan` with its groups' members run the other way, and the name of that way."""
    parallel = not any(g.parallel_members for g in plan.groups.values())
    groups = {name: replace(g, parallel_members=parallel) for name, g in plan.groups.items()}
    return ("in parallel" if parallel else "one after another"), replace(plan, groups=groups)


def measure_example(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    ex = profiled_example(name, workdir)
    spec, ensemble, inventory, profile = ex.spec, ex.ensemble, ex.inventory, ex.profile
    plan = make_plan(spec, inventory, profile)
    other, other_plan = flipped(plan)
    plans = {
        "tritongen": plan,
        other: other_plan,
        "separate": make_plan(spec, inventory, profile, shape=Shape.separate),
    }
    report = run_bench(
        ensemble, inventory, profile, plans, concurrencies=LEVELS,
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, config, points: print(
            f"{name} round {r + 1} {config}: "
            f"{[(round(p.throughput, 1), round(p.p50_ms, 2)) for p in points]}", flush=True
        ),
    )  # fmt: skip
    document = report.to_json()
    document["serving_cost"] = ex.serving.describe()
    return document


def table(name: str, document: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name} (bound {document['bound']['throughput']:.1f} samples/s)",
        "",
        "| configuration | side by side | p50 at 1, served ms | alone, predicted ms "
        "| served (best) samples/s | predicted | served/predicted | of bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bound = document["bound"]["throughput"]
    for config, data in document["configs"].items():
        groups = document["plans"][config].get("groups", {})
        shape = "yes" if any(g.get("parallel_members") for g in groups.values()) else "no"
        lines.append(
            f"| {config} | {shape if groups else 'separate'} | "
            f"**{data['concurrency']['1']['p50_ms']:.2f}** | {data['predicted_latency_ms']:.2f} | "
            f"{data['best_throughput']:.1f} | {data['predicted_throughput']:.1f} | "
            f"{data['measured/predicted']:.2f} | {data['best_throughput'] / bound:.2f} |"
        )
    return [*lines, "", "Every level (median over rounds):", "", *levels_markdown(document)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="heavy,vision,digits")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    documents = {name: measure_example(name, workdir, args) for name in args.examples.split(",")}
    command = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    lines = [
        "# A group's members side by side or one after another",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {time.perf_counter() - started:.0f} s in all.",
        f"Command: `.venv/bin/python benchmarks/parallel_members.py {command}`.",
        "",
        "perf_analyzer over gRPC, one sample per request, concurrency "
        f"{', '.join(map(str, LEVELS))}, on this machine (the model's predictions count its "
        "CPU too).",
        "",
    ]
    for name, document in documents.items():
        lines += table(name, document)
    (OUT / "parallel_members.md").write_text("\n".join(lines) + "\n")
    (OUT / "side_by_side.json").write_text(json.dumps(documents, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
