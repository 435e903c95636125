"""A latency budget, in one run: the fastest plan and the fastest plan whose p99 stays under a
budget (a third of the first's predicted p99), each served on the embedded tritonserver and
measured with perf_analyzer at the concurrency the serving model says reaches its throughput
(and a few others). Both are planned for what is checked here, perf_analyzer on the same cores
(`make_plan(client_on_host=True)`): the budget holds where it is measured. The budget's plan is
made as `tritongen build --max-p99-ms` makes it on the machine it serves on: planned, served at
its predicted concurrency, planned again under a tighter budget while it served over
(`tritongen.bench.budget`); the run then measures it afresh.

    .venv/bin/python benchmarks/latency_budget.py [--example text] [--rounds 3]
    .venv/bin/python benchmarks/latency_budget.py --seed 2301   # a held-out ensemble

Writes benchmarks/latency_budget.md and .json (`latency_budget_<seed>` for a held-out one).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run, round_figures, trials_markdown
from heldout_ensembles import write_ensemble

from tritongen.bench.budget import Planner, plan_checked
from tritongen.bench.compare import levels_markdown, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.errors import PlanError
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory, detect_devices
from tritongen.spec.ensemble import Spec, load_spec
from tritongen.spec.members import load_ensemble


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="text")
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, help="a held-out ensemble instead of an example")
    args = parser.parse_args()
    run = Run.start(__file__, args)
    folder = Path(tempfile.mkdtemp(prefix="budget-"))
    if args.seed is not None:
        spec_path, name = write_ensemble(args.seed, folder / "ex")[0], f"held-out {args.seed}"
    else:
        example = importlib.import_module(f"tritongen.examples.{args.example}")
        spec_path, name = example.write_example(folder / "ex"), f"the {args.example} example"
    spec = load_spec(spec_path)
    ensemble, inventory = load_ensemble(spec), detect_devices()
    profile, _, profile_s = measure_profile(ensemble, inventory)
    fastest = make_plan(spec, inventory, profile, client_on_host=True)
    budget = round(fastest.extra["predicted_p99_ms_local_client"] / 3, 1)
    out = "latency_budget" + ("" if args.seed is None else f"_{args.seed}")
    # as the pipeline asks: the planner's choice, then each shape's best
    planners = [
        planner(spec, inventory, profile, s) for s in (Shape.auto, Shape.grouped, Shape.separate)
    ]
    try:
        within = plan_checked(planners, ensemble, inventory, budget, folder / "checks")
    except PlanError as exc:  # a finding of the run, not a failure of the script
        body = [f"Budget: p99 ≤ **{budget} ms** (a third of the fastest plan's predicted p99).",
                "", f"No plan: {exc}"]  # fmt: skip
        run.write(OUT / f"{out}.md", f"A latency budget on {name}", body)
        return
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
        "trials": round_figures(report),
    }  # fmt: skip
    run.write(OUT / f"{out}.md", f"A latency budget on {name}", markdown(document), data=document)


def planner(spec: Spec, inventory: Inventory, profile: Profile, shape: Shape) -> Planner:
    """Plans in `shape` under a budget, for perf_analyzer on this host."""
    return lambda ms: make_plan(
        spec, inventory, profile, shape=shape, max_p99_ms=ms, client_on_host=True
    )


def markdown(doc: dict[str, Any]) -> list[str]:
    budget = doc["budget_ms"]
    lines = [
        f"Profile {doc['profile_s']} s, {doc['seconds']:.0f} s of serving.",
        "",
        f"Budget: p99 ≤ **{budget} ms** (a third of the fastest plan's predicted p99 here). "
        "Each plan is measured at the concurrency its plan.json predicts it reaches its "
        "throughput with perf_analyzer on this host, medians of the rounds. *predicted* is "
        "plan.json's figure for clients elsewhere; *predicted here* and *predicted p99 here* "
        "are its figures with perf_analyzer on these cores, what the budget constrains.",
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
    return [
        *lines,
        "",
        *checks_markdown(doc["plans"]["tritongen"]),
        f"Over {doc['rounds']} trials:",
        "",
        *trials_markdown(doc["trials"]),
        "Every level measured (median over trials):",
        "",
        *levels_markdown(doc),
    ]


def checks_markdown(plan: dict[str, Any]) -> list[str]:
    """The plans served while the budget's plan was made (`budget_checks`)."""
    checks = plan.get("budget_checks", [])
    lines = [
        f"Made by serving {len(checks)} plan(s) at their predicted concurrency before this run:",
        "",
        "| planned under ms | at concurrency | predicted p99 here ms | served p99 ms |",
        "|---|---|---|---|",
    ]
    for check in checks:
        lines.append(
            f"| {check['planned_ms']:.1f} | {check['concurrency']} | "
            f"{check['predicted_p99_ms']:.1f} | {check['served_p99_ms']:.1f} |"
        )
    return [*lines, ""] + [f"Warning: {w}" for w in plan.get("warnings", [])] + [""]


if __name__ == "__main__":
    main()
