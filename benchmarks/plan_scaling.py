"""Time the planner and compare its plans with the best placement under the base model.

    .venv/bin/python benchmarks/plan_scaling.py [--milp-seconds 300] [--out benchmarks/plan_scaling.md]

Scenarios (synthetic, see tests/synthetic.py): the paper's twelve ImageNet CNNs on 4 and on
16 GPUs of 16 GB, one CNN over 16 GPUs, and random small CPU+GPU instances. "Best" is the
exact optimum of the base model, found by mixed-integer programming (tritongen.plan.optimum);
where the solver's time limit stops it first, both its best placement (a lower bound of the
optimum) and its proven upper bound are given. The LP bound with every member allowed on
every device and memory ignored (the GPU bound, docs/PLANNING.md) is shown too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import TRIALS, Run, mean_sd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic import IMAGENET, gpus, imagenet_profile, random_problem_inputs
from tritongen.errors import PlanError
from tritongen.plan.optimum import best_placement
from tritongen.plan.problem import build_problem
from tritongen.plan.search import make_plan


def timed_plan(members, inventory, profile, repeats=TRIALS):  # type: ignore[no-untyped-def]
    """The plan, and the wall-clock and CPU seconds of each of `repeats` runs."""
    wall, cpu, plan = [], [], None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        plan = make_plan(members, inventory, profile)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return plan, wall, cpu


def scenario(name, members, inventory, profile, milp_seconds):  # type: ignore[no-untyped-def]
    plan, seconds, cpu_seconds = timed_plan(members, inventory, profile)
    row = {
        "scenario": name,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "evaluations": plan.extra["search"]["evaluations"],
        "plan": plan.extra["base_lp_throughput"],  # what the MILP optimises
        "predicted": plan.predicted_throughput,  # the serving model, as plan.json writes it
        "baseline": plan.extra["baseline"],  # one instance per member, the serving model
        "bound": plan.extra["bound"],
    }
    if milp_seconds:
        started = time.perf_counter()
        best = best_placement(build_problem(members, inventory, profile), milp_seconds)
        row |= {
            "milp": best.throughput,
            "milp_bound": best.upper_bound,
            "proven": best.proven,
            "milp_seconds": time.perf_counter() - started,
        }
    return row


def random_instances(count: int, milp_seconds: float) -> dict[str, float]:
    ratios = []
    for seed in range(count):
        rng = np.random.default_rng(seed + 1000)
        members, devices = int(rng.integers(2, 6)), int(rng.integers(2, 5))
        names, inventory, profile = random_problem_inputs(seed, members, devices)
        try:
            plan = make_plan(names, inventory, profile)
        except PlanError:
            continue
        best = best_placement(build_problem(names, inventory, profile), milp_seconds)
        if best.proven:
            ratios.append(plan.extra["base_lp_throughput"] / best.throughput)
    return {
        "n": len(ratios),
        "min": min(ratios),
        "mean": statistics.mean(ratios),
        "sd": statistics.stdev(ratios),
        "at_least_095": sum(r >= 0.95 for r in ratios) / len(ratios),
    }


def report(rows: list[dict], randoms: dict[str, float], milp_seconds: float) -> list[str]:
    lines = [
        f"Plan times are mean ± sd of {TRIALS} runs, wall-clock and CPU (the process's own), "
        "and drift with the load.",
        "",
        "Best placement: exact optimum of the base model by MILP (`tritongen.plan.optimum`, HiGHS, "
        f"{milp_seconds:.0f} s limit). *best found* is the solver's best placement (a lower "
        "bound of the optimum), *proven ≤* its dual bound (an upper bound), equal when proven. "
        "*LP bound* is the GPU bound (docs/PLANNING.md): every member on every device, memory ignored.",
        "",
        "| scenario | plan time (wall / CPU) | model evaluations | predicted (serving model) "
        "| baseline (serving model) | predicted/baseline | plan (base model) | best found | proven ≤ | plan/best found | plan/proven ≤ "
        "| LP bound | plan/LP bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        milp = (
            f"{r['milp']:.1f} | {r['milp_bound']:.1f} | {r['plan'] / r['milp']:.3f} | "
            f"{r['plan'] / r['milp_bound']:.3f}"
            if "milp" in r
            else "– | – | – | –"
        )
        lines.append(
            f"| {r['scenario']} | {mean_sd(r['seconds'], 2)} s / {mean_sd(r['cpu_seconds'], 2)} s | "
            f"{r['evaluations']} | {r['predicted']:.1f} | {r['baseline']:.1f} | "
            f"{r['predicted'] / r['baseline']:.2f} | {r['plan']:.1f} | {milp} | "
            f"{r['bound']:.1f} | {r['plan'] / r['bound']:.3f} |"
        )
    lines += [
        "",
        f"Random small CPU+GPU instances (2–5 members, 2–4 devices, tight memory, some "
        f"classes and batch sizes unprofiled), against the proven MILP optimum: "
        f"{randoms['n']} instances, plan/best min {randoms['min']:.3f}, mean ± sd "
        f"{randoms['mean']:.3f} ± {randoms['sd']:.3f}, {randoms['at_least_095']:.0%} at ≥ 0.95.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--milp-seconds", type=float, default=300.0)
    parser.add_argument("--random", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    run = Run.start(__file__, args)
    cnns = list(IMAGENET)
    rows = [
        scenario("12 CNNs on 4 GPUs", cnns, gpus(4), imagenet_profile(), args.milp_seconds),
        scenario("12 CNNs on 16 GPUs", cnns, gpus(16), imagenet_profile(), 0),
        scenario("1 CNN on 16 GPUs", ["resnet152"], gpus(16), imagenet_profile(["resnet152"]), 60),
    ]
    randoms = random_instances(args.random, 30.0)
    body = report(rows, randoms, args.milp_seconds)
    run.write(args.out, "Planner scaling and quality (base model)", body)


if __name__ == "__main__":
    main()
