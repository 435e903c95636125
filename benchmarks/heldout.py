"""Held-out check of the serving model: ensembles generated from seeds nobody tuned the model on
(benchmarks/heldout_ensembles.py) are profiled, planned, and served as tritongen's plan, naive
and batch_only; each served level is compared with the figure the served plan.json ships for
it (a client on this host), p50 at one request in flight and p99 at the predicted concurrency.

    .venv/bin/python benchmarks/heldout.py --seeds 2101,2102,...        # benchmarks/heldout.md
    .venv/bin/python benchmarks/heldout.py --seeds ... --cores 1         # all pinned to core 0
    .venv/bin/python benchmarks/heldout.py --quick --development         # one small seed, minutes
    .venv/bin/python benchmarks/heldout.py --replay benchmarks/heldout.json --scale IN_FLIGHT=1.5

`--cores N` re-runs the script under `taskset -c 0-(N-1)`: profile, plan, tritonserver and
perf_analyzer (whose CPU the serving cost measures as the client's) all share those cores.
`--budget-s S` starts no further ensemble once the next would end past S seconds; `--small`
profiles batch sizes 1, 4, 16 only and serves 1, 2 and the saturating level (at most 64) for
1.5 s each (`--quick`: `--small` on one two-member development seed). `--cpu-only` leaves a
GPU machine's GPUs out (its CPU checked alone); reports go to $OUT when it is set.
`--replay FILE --scale NAME=FACTOR` predicts a recorded run's plans again with one setting of
the serving model scaled (IN_FLIGHT, TAIL, PARALLEL_MEMBERS_COST_S, PARALLEL_MEMBERS_GAIN), or
one figure of the recorded serving cost (e.g. wait_call_s), for the sensitivity docs/SERVING.md
asks of a setting and of a noisy measurement; `--set NAME=VALUE` puts one value in place of
every ensemble's recorded figure (what a measurement without noise would have predicted);
nothing is served and no report is written (`--parallel-members`: plan with parallel members
allowed, the run their two settings are checked on).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, Run
from heldout_ensembles import write_ensemble

from tritongen.bench.compare import bench_plans, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan import serving_model, serving_units
from tritongen.plan.conditions import levels_up_to, predicted_at, with_figures
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile, ServingCost
from tritongen.spec.devices import Inventory, cpu_model_name, detect_devices, load_inventory
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

# Seeds run while this script and the model were developed, and seeds whose reported runs then
# informed a fix or its diagnosis (2101-2108, 2201-2208, 2301-2308) or will (2401-2412, reported
# with the model of c543103): never reported (again).
DEVELOPMENT_SEEDS = (
    1001, 1002, 1003, *range(2101, 2109), *range(2201, 2209), *range(2301, 2309),
    *range(2401, 2409), 2411, 2412, *range(2413, 2445), *range(2451, 2459), *range(2459, 2547),
)  # fmt: skip
QUICK_SEED = 1001
MAX_LEVEL = 64  # the most requests in flight measured
PINNED = "TRITONGEN_HELDOUT_PINNED"


def measure_ensemble(seed: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    spec_path, family = write_ensemble(
        seed, workdir / str(seed), args.quick, args.max_members, args.heavy
    )
    family += ", heavy" if args.heavy else ""
    spec = load_spec(spec_path)
    ensemble, inventory = load_ensemble(spec), detect_devices()
    if args.cpu_only and inventory.cpu is not None:  # a GPU machine's CPU, checked alone
        inventory = Inventory((inventory.cpu,))
    batches = (1, 4, 16) if args.small else None
    profile, serving, profile_s = measure_profile(
        ensemble, inventory, use_cache=False, batch_sizes=batches
    )
    plan = make_plan(spec, inventory, profile, parallel_members=args.parallel_members)
    saturating = saturating_level(plan)
    levels = levels_up_to(saturating)
    if args.small:  # fewer levels, the saturating one always: the figure it checks is there
        levels = sorted({1, 2, saturating})
    report = run_bench(
        ensemble, inventory, profile, bench_plans(ensemble, inventory, profile, plan),
        concurrencies=levels, interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
    )  # fmt: skip
    document = report.to_json()
    document |= {
        "seed": seed,
        "family": family,
        "costs_ms": {m: 1000 * c for m, c in profile.cpu_cost_s_per_sample.items()},
        "profile_s": round(profile_s, 1),
        "serving_cost": serving.describe(),
        "profile": profile.to_json(),
        "inventory": inventory.to_json(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return document


def saturating_level(plan: Plan) -> int:
    """The requests in flight plan.json says saturate it (a client on this host), as measured."""
    return min(int(plan.extra["predicted_concurrency_local_client"]), MAX_LEVEL)


def level_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per level: each configuration's served and predicted throughput and p50."""
    rows = []
    configs = document["configs"]
    for level in sorted(configs["tritongen"]["concurrency"], key=int):
        row: dict[str, Any] = {"level": int(level)}
        for name, config in configs.items():
            point = config["concurrency"][level]
            row[name] = point
        rows.append(row)
    return rows


def ensemble_summary(document: dict[str, Any]) -> dict[str, Any]:
    """What the targets of issue 20 read from one ensemble."""
    plan = Plan.from_json(document["plans"]["tritongen"])
    rows = level_rows(document)
    ratios = [
        r["tritongen"]["throughput"] / r["tritongen"]["predicted_throughput"]
        for r in rows
        if r["tritongen"].get("predicted_throughput")
    ]
    vs_baselines = [
        r["tritongen"]["throughput"] / max(r["naive"]["throughput"], r["batch_only"]["throughput"])
        for r in rows
    ]
    one = rows[0]
    p50_vs = one["tritongen"]["p50_ms"] / min(one["naive"]["p50_ms"], one["batch_only"]["p50_ms"])
    at = str(plan.extra["predicted_concurrency_local_client"])
    served_at = document["configs"]["tritongen"]["concurrency"].get(at)
    p99 = served_at["p99_ms"] / plan.extra["predicted_p99_ms_local_client"] if served_at else None
    level = saturating_level(plan)
    saturated = predicted_at(plan, level)
    served_saturated = document["configs"]["tritongen"]["concurrency"].get(str(level))
    return {
        "seed": document["seed"],
        "family": document["family"],
        "members": len(plan.allocation),
        "cheapest_ms": min(document["costs_ms"].values()),
        "dearest_ms": max(document["costs_ms"].values()),
        "at_saturation": (
            served_saturated["throughput"] / saturated[0]
            if saturated and served_saturated
            else None
        ),
        "levels": ratios,
        "p99_ratio": p99,
        "vs_baselines_min": min(vs_baselines),
        "p50_at_1_vs_baselines": p50_vs,
        "of_bound": document["ratios"]["tritongen/bound"],
    }


def ensemble_table(document: dict[str, Any]) -> list[str]:
    s = ensemble_summary(document)
    costs = ", ".join(f"{m} {c:.2f}" for m, c in document["costs_ms"].items())
    lines = [
        f"### seed {s['seed']}: {s['family']}, {s['members']} members ({document['seconds']} s)",
        "",
        f"One-thread ms per sample: {costs}. {document['serving_cost']}",
        "",
        "| in flight | config | predicted /s | served /s | served/predicted "
        "| p50 predicted ms | p50 served ms | p99 served ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in level_rows(document):
        for name in ("tritongen", "naive", "batch_only"):
            p = row[name]
            predicted = p.get("predicted_throughput", float("nan"))
            lines.append(
                f"| {row['level']} | {name} | {predicted:.1f} | {p['throughput']:.1f} | "
                f"{p['throughput'] / predicted:.2f} | {p.get('predicted_p50_ms', float('nan')):.2f} "
                f"| {p['p50_ms']:.2f} | {p['p99_ms']:.2f} |"
            )
    p99 = "not measured" if s["p99_ratio"] is None else f"{s['p99_ratio']:.2f}"
    sat = "not measured" if s["at_saturation"] is None else f"{s['at_saturation']:.2f}"
    return [
        *lines,
        "",
        f"tritongen at the saturating level / predicted there: {sat}; p99 at the "
        f"predicted concurrency served/predicted: {p99}; tritongen / best baseline, worst level: "
        f"{s['vs_baselines_min']:.2f}; p50 at 1 / best baseline's: "
        f"{s['p50_at_1_vs_baselines']:.2f}; of bound: {s['of_bound']:.2f}",
        "",
    ]


def overall(documents: list[dict[str, Any]]) -> list[str]:
    summaries = [ensemble_summary(d) for d in documents]
    errors = [abs(r - 1) for s in summaries for r in s["levels"]]
    saturated = [s["at_saturation"] for s in summaries if s["at_saturation"]]
    p99 = [s["p99_ratio"] for s in summaries if s["p99_ratio"] is not None]

    def band(values: list[float], width: float) -> str:
        return f"{sum(abs(v - 1) <= width for v in values)} of {len(values)}"

    return [
        "## Summary",
        "",
        f"- served/predicted (tritongen, every level): median |error| "
        f"{statistics.median(errors):.3f}, worst {max(errors):.3f}; within 0.90–1.10: "
        f"{band([e + 1 for e in errors], 0.1)}, 0.80–1.20: {band([e + 1 for e in errors], 0.2)}",
        f"- at the saturating level (served / predicted there, a client on this host): "
        f"{', '.join(f'{r:.2f}' for r in saturated)}; within 0.90–1.10: "
        f"{band(saturated, 0.1)}, 0.80–1.20: {band(saturated, 0.2)}",
        f"- p99 at the predicted concurrency, served/predicted: "
        f"{', '.join(f'{r:.2f}' for r in p99)}; within ±20%: {band(p99, 0.2)}",
        "- tritongen / best of naive and batch_only, worst level: "
        + ", ".join(f"{s['vs_baselines_min']:.2f}" for s in summaries),
        "- p50 at 1 in flight / best baseline's: "
        + ", ".join(f"{s['p50_at_1_vs_baselines']:.2f}" for s in summaries),
        "- of the bound: " + ", ".join(f"{s['of_bound']:.2f}" for s in summaries),
        "",
    ]


def model_modified() -> bool:
    """Whether tritongen/ differs from the commit (read when the run starts: the model a run
    imports is the one on disk then)."""
    return bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--", "tritongen"], capture_output=True, text=True,
            check=False,
        ).stdout.strip()
    )  # fmt: skip


def header(provenance: Run, seeds: list[int], dirty: bool) -> list[str]:
    """The harness's header, and the seeds; a model changed since its commit is no report."""
    cpu = detect_devices().cpu
    return [
        "# Held-out ensembles: predicted against served",
        "",
        *provenance.header(),
        f"Seeds {', '.join(map(str, seeds))}; {cpu.cores if cpu else '?'} usable cores of "
        f"{os.cpu_count()} ({cpu_model_name()})"
        + (" — tritongen/ modified since the commit: not a report" if dirty else "")
        + ".",
        "",
    ]


def replay(path: Path, scales: list[str], values: list[str] | None = None) -> None:
    """Predict a recorded run's plans again with settings scaled (a serving model's constant,
    or a field of the recorded serving cost) and recorded serving-cost fields set to one value
    (`values`); print the errors, then their summary."""
    recorded_fields = set(ServingCost.__dataclass_fields__)
    factors = name_values(scales)
    fields = {name: f for name, f in factors.items() if name in recorded_fields}
    for name in factors.keys() - fields.keys():
        module = serving_units if name.startswith("PARALLEL") else serving_model
        setattr(module, name, getattr(module, name) * factors[name])
    set_to = name_values(values or [])
    if unknown := set_to.keys() - recorded_fields:
        raise SystemExit(f"--set takes fields of the serving cost, not {sorted(unknown)}")
    saturating, p99s = [], []
    for document in json.loads(path.read_text()):
        recorded = document["profile"]
        cost = recorded.get("serving_cost", {})
        cost = cost | {name: cost.get(name, 0.0) * f for name, f in fields.items()} | set_to
        profile = Profile.from_json(recorded | {"serving_cost": cost})
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "DEVICES.json").write_text(json.dumps(document["inventory"]))
            inventory = load_inventory(Path(tmp) / "DEVICES.json")
        bare = Plan.from_json(document["plans"]["tritongen"])
        plan = with_figures(replace(bare, extra={}), inventory, profile)
        levels = document["configs"]["tritongen"]["concurrency"]
        for level, point in levels.items():
            predicted = predicted_at(plan, int(level))
            ratio = point["throughput"] / predicted[0] if predicted else float("nan")
            print(f"seed {document['seed']} level {level}: served/predicted {ratio:.2f}")
        saturating.append(ratio)  # the last level served is the saturating one
        at = str(plan.extra["predicted_concurrency_local_client"])
        served = levels.get(at)
        if served:
            p99 = served["p99_ms"] / plan.extra["predicted_p99_ms_local_client"]
            print(f"seed {document['seed']} p99 at {at}: served/predicted {p99:.2f}")
            p99s.append(p99)
    print(replay_summary(saturating, p99s))


def name_values(items: list[str]) -> dict[str, float]:
    """NAME=NUMBER items (`--scale`, `--set`) as a dict; a malformed one ends the script."""
    pairs = [item.partition("=") for item in items]
    try:
        return {name: float(value) for name, _, value in pairs}
    except ValueError:
        raise SystemExit(f"expected NAME=NUMBER, got {items}") from None


def replay_summary(saturating: list[float], p99s: list[float]) -> str:
    errors = [abs(r - 1) for r in saturating]
    within = sum(0.90 <= r <= 1.10 for r in saturating)
    p99_within = sum(0.80 <= r <= 1.20 for r in p99s)
    return (
        f"saturating level: median |error| {statistics.median(errors):.3f}, {within} of "
        f"{len(saturating)} within 0.90-1.10 ({min(saturating):.2f}-{max(saturating):.2f}); "
        f"p99 at the predicted concurrency: {p99_within} of {len(p99s)} within ±20%"
        + (f" ({min(p99s):.2f}-{max(p99s):.2f})" if p99s else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="")
    parser.add_argument("--cores", type=int, default=0, help="pin everything to cores 0..N-1")
    parser.add_argument("--quick", action="store_true", help="one small ensemble, minutes")
    parser.add_argument(
        "--small", action="store_true", help="batch sizes 1, 4, 16; levels 1, 2, saturating"
    )
    parser.add_argument("--budget-s", type=float, default=0.0)
    parser.add_argument("--max-members", type=int, default=8, help="draw at most N members")
    parser.add_argument(
        "--heavy", action="store_true", help="every member about 1 ms per sample or more"
    )
    parser.add_argument(
        "--parallel-members", action="store_true", help="let the plan run members in parallel"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--cpu-only", action="store_true", help="leave this machine's GPUs out")
    parser.add_argument("--development", action="store_true", help="allow DEVELOPMENT_SEEDS")
    parser.add_argument("--out", default="heldout")
    parser.add_argument("--replay", type=Path)
    parser.add_argument("--scale", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args.scale, args.set)
    if args.cores and os.environ.get(PINNED) != str(args.cores):
        cores = f"0-{args.cores - 1}" if args.cores > 1 else "0"
        env = {**os.environ, PINNED: str(args.cores)}
        os.execvpe("taskset", ["taskset", "-c", cores, sys.executable, *sys.argv], env)
    seeds = [int(s) for s in args.seeds.split(",") if s] or ([QUICK_SEED] if args.quick else [])
    if not seeds:
        parser.error("give --seeds (or --quick)")
    development = [s for s in seeds if s in DEVELOPMENT_SEEDS]
    if development and not args.development:
        parser.error(f"seeds {development} were used while developing: not for a report")
    if args.quick or args.small:
        args.small, args.duration_s = True, min(args.duration_s, 1.5)
    provenance = Run.start(__file__, args)
    args.modified = model_modified()
    run(args, seeds, provenance)


def run(args: argparse.Namespace, seeds: list[int], provenance: Run) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="heldout-"))
    documents: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in seeds:
        elapsed = time.perf_counter() - started
        last = documents[-1]["seconds"] if documents else 0.0
        if args.budget_s and elapsed + last > args.budget_s:
            print(f"budget: seed {seed} and after not run ({elapsed:.0f} s spent)", flush=True)
            break
        documents.append(measure_ensemble(seed, workdir, args))
        print(f"seed {seed}: {documents[-1]['seconds']} s", flush=True)
        write(args, documents, provenance)  # after each ensemble: a long run keeps what it did


def write(args: argparse.Namespace, documents: list[dict[str, Any]], provenance: Run) -> None:
    done = [d["seed"] for d in documents]
    lines = header(provenance, done, args.modified) + overall(documents)
    for document in documents:
        lines += ensemble_table(document)
    suffix = "_dev" if args.development else ""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.out}{suffix}.md").write_text("\n".join(lines) + "\n")
    (OUT / f"{args.out}{suffix}.json").write_text(json.dumps(documents, indent=2) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
