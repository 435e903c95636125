"""A group's members in parallel against one after another, and against the members served
separately, compared in one run on the same machine: the latency of a lone request (p50 at concurrency
1) and the best throughput, served on the embedded tritonserver and measured with perf_analyzer,
each beside the serving model's prediction.

    .venv/bin/python benchmarks/parallel_members.py [--examples heavy,vision,digits] [--rounds 3]

For each example: its profile, tritongen's plan (a group, its members in parallel where that pays), the
same plan with the group's members run the other way, and the separate plan. Rounds alternate
the order so that drift cancels. Writes benchmarks/parallel_members.md and .json.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run, profiled_example, round_figures, trials_markdown

from tritongen.bench.compare import levels_markdown, run_bench
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan

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
    document["trials"] = round_figures(report)
    document["serving_cost"] = ex.serving.describe()
    return document


def table(name: str, document: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name} (bound {document['bound']['throughput']:.1f} samples/s)",
        "",
        "| configuration | members in parallel | p50 at 1, served ms | alone, predicted ms "
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
    return [
        *lines,
        "",
        f"Over {document['rounds']} trials:",
        "",
        *trials_markdown(document["trials"]),
        "Every level (median over trials):",
        "",
        *levels_markdown(document),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="heavy,vision,digits")
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=3.0)
    args = parser.parse_args()
    run = Run.start(__file__, args)
    workdir = Path(tempfile.mkdtemp(prefix="parallel-members-"))
    documents = {name: measure_example(name, workdir, args) for name in args.examples.split(",")}
    lines = [
        "perf_analyzer over gRPC, one sample per request, concurrency "
        f"{', '.join(map(str, LEVELS))}, on this machine (the model's predictions count its "
        "CPU too).",
        "",
    ]
    for name, document in documents.items():
        lines += table(name, document)
    title = "A group's members in parallel or one after another"
    run.write(OUT / "parallel_members.md", title, lines, data=documents)


if __name__ == "__main__":
    main()
