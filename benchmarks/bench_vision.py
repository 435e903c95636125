"""The benchmark of issue 5 on the vision ensemble (4 CNNs, 3×96×96), in one run:

1. profile + plan (timed: what tritongen's search costs before any serving);
2. naive, batch_only and tritongen compared in one run against the CPU bound
   (`tritongen bench`'s report, plots of throughput and of the allocation matrix);
3. search cost: tritongen's re-implementation of Model Analyzer's quick-search method (a hill
   climb, `tritongen.bench.hillclimb`, every candidate served and
   measured) against tritongen's profile + model-based plan + a few measured refinements.

    .venv/bin/python benchmarks/bench_vision.py [--rounds 3] [--duration-s 3] [--skip-climb]

Writes benchmarks/bench_vision.{md,json}, benchmarks/vision_throughput.png and
benchmarks/vision_allocation.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run, mean_sd, round_figures, trials_markdown

from tritongen.bench.compare import (
    ServedMeasurer,
    bench_plans,
    levels_markdown,
    prediction_markdown,
    run_bench,
)
from tritongen.bench.hillclimb import hill_climb
from tritongen.bench.plots import allocation_heatmap, throughput_plot
from tritongen.bench.serving_cost import measure_profile
from tritongen.examples.vision import write_example
from tritongen.plan.search import PlanEvaluator, make_plan
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

SEARCH_CONCURRENCY = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--skip-climb", action="store_true")
    parser.add_argument("--max-climb", type=int, default=60)
    args = parser.parse_args()
    run = Run.start(__file__, args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    spec = load_spec(write_example(workdir / "vision"))
    ensemble = load_ensemble(spec)
    inventory = detect_devices()

    profile, _, profile_s = measure_profile(ensemble, inventory, use_cache=False)
    started = time.perf_counter()
    plan = make_plan(spec, inventory, profile)
    plan_s = time.perf_counter() - started

    levels = [int(c) for c in args.concurrency.split(",")]
    report = run_bench(
        ensemble, inventory, profile, bench_plans(ensemble, inventory, profile, plan), concurrencies=levels,
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, name, points: print(f"round {r + 1} {name}: {[round(p.throughput, 1) for p in points]}", flush=True),
    )  # fmt: skip
    document = report.to_json()
    document["trials"] = round_figures(report)
    document["profile_s"] = round(profile_s, 1)
    document["plan_s"] = round(plan_s, 2)
    throughput_plot(document, OUT / "vision_throughput.png", "vision ensemble on 2 CPU cores")
    allocation_heatmap(plan, OUT / "vision_allocation.png", "tritongen plan (instances per device)")

    if not args.skip_climb:
        document["search_cost"] = search_cost(
            ensemble, inventory, profile, spec, plan, workdir, args, profile_s + plan_s
        )
    title = "tritongen bench: the vision ensemble on this machine"
    run.write(OUT / "bench_vision.md", title, markdown(document), data=document)


def search_cost(
    ensemble, inventory, profile, spec, model_plan, workdir: Path, args, model_s: float
) -> dict[str, Any]:
    """Both searches measured on the same evaluator: serve the candidate, perf_analyzer at c=8."""
    interval = int(args.duration_s * 1000)
    climber = ServedMeasurer(
        ensemble, inventory, workdir / "climb", (SEARCH_CONCURRENCY,), interval
    )
    climb = hill_climb(ensemble, inventory, climber, max_measurements=args.max_climb)
    refiner = ServedMeasurer(
        ensemble, inventory, workdir / "refine", (SEARCH_CONCURRENCY,), interval
    )
    started = time.perf_counter()
    refined = make_plan(
        spec,
        inventory,
        profile,
        refine_with=lambda problem: PlanEvaluator(problem, refiner, profile.serving_cost),
    )
    refine_s = time.perf_counter() - started
    # The winners measured again by one evaluator, back to back in alternation, TRIALS times:
    # the fair comparison. The model's plan alone needed no served configuration at all.
    final = ServedMeasurer(ensemble, inventory, workdir / "final", (SEARCH_CONCURRENCY,), interval)
    plans = (climb.best_plan, refined, model_plan)
    again = [list(t) for t in zip(*[[final(p) for p in plans] for _ in range(TRIALS)], strict=True)]
    climb_again, ours_again, model_again = again
    return {
        "hill_climb": {"measured_configurations": climb.measurements, "seconds": round(climb.seconds, 1),
                       "throughput_during_search": climb.best_throughput, "throughput_remeasured": climb_again,
                       "plan": climb.best_plan.to_json()},
        "tritongen": {"measured_configurations": refiner.served, "seconds": round(model_s + refine_s, 1),
                      "throughput_during_search": refined.extra.get("refined_throughput"),
                      "throughput_remeasured": ours_again, "plan": refined.to_json()},
        "tritongen_model_only": {"measured_configurations": 0, "seconds": round(model_s, 1),
                                 "throughput_remeasured": model_again},
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> list[str]:
    bound = doc["bound"]["throughput"]
    lines = [
        f"{doc['seconds']:.0f} s of serving; profile {doc['profile_s']} s, plan {doc['plan_s']} s.",
        "",
        "Members: tiny, mobile, resnet, vgg (plain torch CNNs, 3×96×96 → 100 classes, exported to ONNX).",
        f"Bound (cores / Σ one-thread CPU seconds per sample): **{bound:.1f} samples/s**.",
        "",
    ]
    lines += [f"Over {doc['rounds']} trials:", "", *trials_markdown(doc["trials"])]
    lines += ["Every level (median over trials):", "", *levels_markdown(doc)]
    lines += [
        "![throughput](vision_throughput.png)",
        "",
        "![allocation](vision_allocation.png)",
        "",
    ]
    plan = doc["plans"]["tritongen"]
    lines += [
        f"tritongen's plan: allocation {plan['allocation']}, batch sizes {plan['batch_size']}, threads {plan['threads']}, groups {plan.get('groups', {})}.",
        "",
        *prediction_markdown(doc),
    ]
    if "search_cost" in doc:
        sc = doc["search_cost"]
        lines += [
            "## Search cost: a re-implementation of Model Analyzer's method against tritongen",
            "",
            f"Both measured with the same evaluator (render, serve, perf_analyzer at concurrency {SEARCH_CONCURRENCY}); "
            "the winners, and the model's plan before any measured refinement, are then measured again "
            f"back to back, {TRIALS} times in alternation.",
            "",
            "| search | served configurations | wall s | throughput re-measured, mean ± sd |",
            "|---|---|---|---|",
            f"| hill climb (tritongen's re-implementation of Model Analyzer's quick search) | {sc['hill_climb']['measured_configurations']} | {sc['hill_climb']['seconds']} | {mean_sd(sc['hill_climb']['throughput_remeasured'])} |",
            f"| tritongen (profile + plan + refinements) | {sc['tritongen']['measured_configurations']} | {sc['tritongen']['seconds']} | {mean_sd(sc['tritongen']['throughput_remeasured'])} |",
            f"| tritongen, model's plan only (profile + plan) | 0 | {sc['tritongen_model_only']['seconds']} | {mean_sd(sc['tritongen_model_only']['throughput_remeasured'])} |",
            "",
            "The hill climb is tritongen's own code (`tritongen/bench/hillclimb.py`), not Model "
            "Analyzer; the real Model Analyzer is measured by `benchmarks/model_analyzer.py`.",
            "",
        ]
    return lines


if __name__ == "__main__":
    main()
