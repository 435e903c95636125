"""Predicted against served throughput for every configuration tritongen builds or considers,
on three ensembles (digits, vision, heavy), in one run:

- naive and batch_only (the baselines), tritongen's plan, and the plan of the other shape
  (members served separately when the plan groups them, and grouped when it does not);
- each predicted by the serving model with perf_analyzer on this machine, then served on the
  embedded tritonserver and measured with perf_analyzer over gRPC at several concurrencies;
- the ratio served/predicted at the best concurrency (target: 0.90–1.10).

    .venv/bin/python benchmarks/prediction.py [--examples digits,vision,heavy] [--rounds 1]

Writes benchmarks/prediction.md and benchmarks/prediction.json (`--out NAME`: NAME.md and
NAME.json in benchmarks/, e.g. prediction_text for `--examples text`). The JSON keeps each
example's profile and devices, so that `--replay FILE` predicts that run's plans again with the
serving model as it is now (writing prediction_replay.md), without serving anything: for working
on the model, not for the record.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritongen.bench.compare import bench_plans, prediction_fields, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan
from tritongen.plan.serving_model import predict_plan
from tritongen.profile.profile import Profile, ServingCost
from tritongen.render.repository import group_model_name
from tritongen.spec.devices import Inventory, detect_devices, load_inventory
from tritongen.spec.ensemble import Spec, load_spec
from tritongen.spec.members import Ensemble, load_ensemble

OUT = Path(__file__).resolve().parent
LEVELS = [1, 8, 32, 64]


@dataclass(frozen=True)
class ProfiledExample:
    """An example ensemble written to disk, on this machine's devices, profiled afresh."""

    spec: Spec
    ensemble: Ensemble
    inventory: Inventory
    profile: Profile
    serving: ServingCost
    profile_s: float


def profiled_example(name: str, workdir: Path) -> ProfiledExample:
    example = importlib.import_module(f"tritongen.examples.{name}")
    spec = load_spec(example.write_example(workdir / name))
    ensemble, inventory = load_ensemble(spec), detect_devices()
    profile, serving, profile_s = measure_profile(ensemble, inventory, use_cache=False)
    return ProfiledExample(spec, ensemble, inventory, profile, serving, profile_s)


def measure_example(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    ex = profiled_example(name, workdir)
    spec, ensemble, inventory, profile = ex.spec, ex.ensemble, ex.inventory, ex.profile
    plan = make_plan(spec, inventory, profile)
    other = Shape.separate if plan.groups else Shape.grouped
    plans = bench_plans(ensemble, inventory, profile, plan)
    plans[f"tritongen, {other.value}"] = make_plan(spec, inventory, profile, shape=other)
    report = run_bench(
        ensemble, inventory, profile, plans, concurrencies=LEVELS,
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, config, points: print(
            f"{name} round {r + 1} {config}: {[round(p.throughput, 1) for p in points]}", flush=True
        ),
    )  # fmt: skip
    document = report.to_json()
    document["profile_s"] = round(ex.profile_s, 1)
    document["serving_cost"] = ex.serving.describe()
    document["profile"] = profile.to_json()
    document["inventory"] = inventory.to_json()
    for config, plan in plans.items():
        document["configs"][config]["served_models"] = {
            m: group_model_name(ensemble, plan, g) if (g := plan.group_of(m)) else m
            for m in plan.allocation
        }
    return document


def replay(document: dict[str, Any]) -> dict[str, Any]:
    """A recorded example with its predictions made again by the current serving model."""
    profile = Profile.from_json(document["profile"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "DEVICES.json"
        path.write_text(json.dumps(document["inventory"]))
        inventory = load_inventory(path)
    for config, data in document["configs"].items():
        plan = Plan.from_json(document["plans"][config])
        in_flight = max(int(c) for c in data["concurrency"])
        prediction = predict_plan(
            plan, inventory, profile, client_on_host=True, max_in_flight=in_flight
        )
        data.update(prediction_fields(prediction, plan, data["best_throughput"]))
    return document


def runnable_cell(point: dict[str, Any]) -> str:
    """Threads runnable on the machine at the best concurrency, on average (RunQueue)."""
    runnable = point.get("runnable")
    return "" if runnable is None else f"{runnable:.1f}"


def batches_cell(data: dict[str, Any], best: str) -> str:
    """Per member: the batch the model predicts its batcher forms / the one served at the best
    concurrency (Triton's inference and execution counts; a grouped member shows its group's)."""
    served = data["concurrency"][best].get("batches", {})
    models = data.get("served_models", {})
    return ", ".join(
        f"{m} {b:.1f}/{served.get(models.get(m, m), float('nan')):.1f}"
        for m, b in data.get("predicted_batches", {}).items()
    )


def table(name: str, document: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name} (bound {document['bound']['throughput']:.1f} samples/s; profile "
        f"{document['profile_s']} s)",
        "",
        document["serving_cost"],
        "",
        "| configuration | shape | predicted | served (best) | at concurrency | served/predicted "
        "| predicted alone ms | served p50 at 1 ms | batch predicted/served | runnable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, data in document["configs"].items():
        plan = document["plans"][config]
        shape = "grouped" if plan.get("groups") else "separate"
        points = data["concurrency"]
        best = max(points, key=lambda c: points[c]["throughput"])
        lines.append(
            f"| {config} | {shape} | {data['predicted_throughput']:.1f} | "
            f"{data['best_throughput']:.1f} | {best} | **{data['measured/predicted']:.2f}** | "
            f"{data['predicted_latency_ms']:.2f} | {points['1']['p50_ms']:.2f} | "
            f"{batches_cell(data, best)} | {runnable_cell(points[best])} |"
        )
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in document["ratios"].items())
    return [*lines, "", f"Ratios (best concurrency of each): {ratios}", ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="digits,vision,heavy")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--replay", type=Path, help="a prediction.json to predict again")
    parser.add_argument("--out", default="prediction", help="NAME: writes NAME.md, NAME.json")
    args = parser.parse_args()
    if args.replay:
        recorded = json.loads(args.replay.read_text())
        documents = {name: replay(document) for name, document in recorded.items()}
        lines = summary(documents, [f"Replayed from `{args.replay}` by the current model.", ""])
        (OUT / "prediction_replay.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    workdir = Path(tempfile.mkdtemp(prefix="prediction-"))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    documents = {name: measure_example(name, workdir, args) for name in args.examples.split(",")}
    command = (
        "`.venv/bin/python benchmarks/prediction.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
        + "`"
    )
    header = [
        f"Machine: {os.cpu_count()} CPU cores, no GPU; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {time.perf_counter() - started:.0f} s in all.",
        f"Command: {command}.",
        "",
    ]
    lines = summary(documents, header)
    (OUT / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    (OUT / f"{args.out}.json").write_text(json.dumps(documents, indent=2) + "\n")
    print("\n".join(lines))


def summary(documents: dict[str, dict[str, Any]], header: list[str]) -> list[str]:
    ratios = [c["measured/predicted"] for d in documents.values() for c in d["configs"].values()]
    lines = [
        "# Predicted against served throughput",
        "",
        *header,
        "Each configuration is predicted by the serving model (docs/SERVING.md) with perf_analyzer "
        "on this machine, then served on the embedded tritonserver and measured with perf_analyzer "
        f"(gRPC, one sample per request, concurrency {', '.join(map(str, LEVELS))}). "
        "*served/predicted* compares the best concurrency's throughput with the prediction.",
        "",
        f"served/predicted over all {len(ratios)} configurations: min {min(ratios):.2f}, "
        f"max {max(ratios):.2f}; within 0.90–1.10: "
        f"{sum(0.9 <= r <= 1.1 for r in ratios)} of {len(ratios)}.",
        "",
    ]
    for name, document in documents.items():
        lines += table(name, document)
    return lines


if __name__ == "__main__":
    main()
