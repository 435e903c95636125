"""A latency budget on the text example, in one run: the fastest plan and the fastest plan
whose predicted p99 stays under a budget (a third of the first's predicted p99), each served on
the embedded tritonserver and measured with perf_analyzer at the concurrency the serving model
says reaches its throughput (and a few others), side by side.

    .venv/bin/python benchmarks/latency_budget.py [--example text] [--rounds 2]

Writes benchmarks/latency_budget.md and .json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tritongen.bench.compare import levels_markdown, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.search import make_plan
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

OUT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="text")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    example = importlib.import_module(f"tritongen.examples.{args.example}")
    spec = load_spec(example.write_example(Path(tempfile.mkdtemp(prefix="budget-")) / "ex"))
    ensemble, inventory = load_ensemble(spec), detect_devices()
    profile, _, profile_s = measure_profile(ensemble, inventory)
    fastest = make_plan(spec, inventory, profile)
    budget = round(fastest.extra["predicted_p99_ms"] / 3, 1)
    within = make_plan(spec, inventory, profile, max_p99_ms=budget)
    plans = {"tritongen": within, "tritongen, no budget": fastest}
    levels = sorted(
        {1, 8, *(int(p.extra["predicted_concurrency_local_client"]) for p in plans.values())}
    )
    report = run_bench(
        ensemble, inventory, profile, plans, concurrencies=levels,
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, name, points: print(
            f"round {r + 1} {name}: {[(p.concurrency, round(p.throughput), round(p.p99_ms, 1)) for p in points]}",
            flush=True,
        ),
    )  # fmt: skip
    document = {
        **report.to_json(), "budget_ms": budget, "profile_s": round(profile_s, 1),
        "load": [load_before, os.getloadavg()[0]],
    }  # fmt: skip
    lines = markdown(document, args)
    (OUT / "latency_budget.md").write_text("\n".join(lines) + "\n")
    (OUT / "latency_budget.json").write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))


def markdown(doc: dict[str, Any], args: argparse.Namespace) -> list[str]:
    budget = doc["budget_ms"]
    lines = [
        f"# A latency budget on the {args.example} example",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU; load average {doc['load'][0]:.1f} before, "
        f"{doc['load'][1]:.1f} after.",
        f"Command: `.venv/bin/python benchmarks/latency_budget.py --example {args.example} "
        f"--rounds {args.rounds} --duration-s {args.duration_s}` (profile {doc['profile_s']} s, "
        f"{doc['seconds']:.0f} s of serving).",
        "",
        f"Budget: p99 ≤ **{budget} ms** (a third of the fastest plan's predicted p99). "
        "Each plan is measured at the concurrency its plan.json predicts it reaches its "
        "throughput with perf_analyzer on this host, medians of the rounds. *predicted* is "
        "plan.json's figure for clients elsewhere (what the budget constrains); *predicted here* "
        "and *predicted p99 here* are its figures with perf_analyzer on these cores.",
        "",
        "| plan | shape | predicted samples/s | predicted here | predicted p99 here ms "
        "| at concurrency | served samples/s | served p50 ms | served p99 ms | p99 within budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, plan in doc["plans"].items():
        level = str(plan["predicted_concurrency_local_client"])
        config = doc["configs"][name]
        served = config["concurrency"][level]
        groups = plan.get("groups", {})
        shape = ", ".join(f"grouped, batches of {g['batch_size']}" for g in groups.values())
        lines.append(
            f"| {name} | {shape or 'separate'} | {plan['predicted_throughput']:.1f} | "
            f"{plan['predicted_throughput_local_client']:.1f} | "
            f"{plan['predicted_p99_ms_local_client']:.1f} | {level} | "
            f"{served['throughput']:.1f} | {served['p50_ms']:.1f} | {served['p99_ms']:.1f} | "
            f"{'yes' if served['p99_ms'] <= budget else 'no'} |"
        )
    return [*lines, "", "Every level measured:", "", *levels_markdown(doc)]


if __name__ == "__main__":
    main()
