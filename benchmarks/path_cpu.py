"""Where the CPU of a served request goes, predicted against served: tritonserver's own
process, the group's processes and perf_analyzer, in CPU seconds per request, for tritongen's
plan of held-out ensembles served at one request in flight and at 64, over several trials;
and the serving cost's stand-in alone at the load it is measured at and at 64.

The serving model predicts tritonserver's and the client's share from the serving cost's
stand-in, which computes nothing (`bench/serving_cost.py`); what is left of the predicted CPU
per request (the cores over the predicted throughput) is the group's: its members' work and
its calls. Plans that are not one group of every member are reported without the split.

    .venv/bin/python benchmarks/path_cpu.py --seeds 2303,2306
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run
from heldout_ensembles import write_ensemble

from tritongen.bench.compare import ServedMeasurer
from tritongen.bench.serving_cost import measure_profile, stand_in_cpu
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan
from tritongen.profile.profile import ServingCost
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

LEVELS = (1, 64)
PARTS = ("server", "models", "client")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=2.0)
    args = parser.parse_args()
    run = Run.start(__file__, args)
    documents = [measure(int(s), args) for s in args.seeds.split(",") if s]
    lines = []
    for document in documents:
        lines += markdown(document)
    run.write(
        OUT / "path_cpu.md",
        "CPU per request, predicted against served",
        lines,
        {"seeds": documents},
    )


def measure(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="path-cpu-"))
    spec = load_spec(write_ensemble(seed, folder / "ex")[0])
    ensemble, inventory = load_ensemble(spec), detect_devices()
    profile, cost, _ = measure_profile(ensemble, inventory, batch_sizes=(1, 4, 16))
    plan = make_plan(spec, inventory, profile)
    measurer = ServedMeasurer(
        ensemble,
        inventory,
        folder,
        concurrencies=list(LEVELS),
        interval_ms=int(1000 * args.duration_s),
    )
    trials = [[p.to_json() for p in measurer.points(plan)] for _ in range(args.rounds)]
    largest = spec.max_batch_size
    alone = [
        stand_in_cpu(ensemble.inputs, ensemble.num_classes, largest, inventory, (2 * largest, 64))
        for _ in range(args.rounds)
    ]
    cores = inventory.cpu.cores if inventory.cpu and inventory.cpu.cores else 1
    return {
        "seed": seed,
        "plan": plan.to_json(),
        "predicted": predicted_parts(plan, cost, cores, len(ensemble.members)),
        "trials": trials,
        "stand_in": alone,
    }


def predicted_parts(plan: Plan, cost: ServingCost, cores: int, members: int) -> dict[str, float]:
    """CPU seconds per request the serving model charges at saturation, by process, for a plan
    of one group of every member (the group the served model: no scheduler, no combine step)."""
    groups = list(plan.groups.values())
    if len(groups) != 1 or len(groups[0].members) != members:
        return {}
    batch = max(plan.extra.get("predicted_batches", {}).values(), default=1.0)
    total = cores / plan.extra["predicted_throughput_local_client"]
    server = cost.request_s + cost.wire_s + cost.server_call_s / batch
    return {"server": server, "models": total - server - cost.client_s, "client": cost.client_s}


def markdown(document: dict[str, Any]) -> list[str]:
    lines = [
        f"## seed {document['seed']}",
        "",
        f"Predicted {document['plan']['predicted_throughput_local_client']:.0f} samples/s with "
        "perf_analyzer on this host; CPU ms per request, served as mean ± sd over "
        f"{len(document['trials'])} trials.",
        "",
        "| in flight | samples/s | " + " | ".join(f"{p} served" for p in PARTS) + " | "
        + " | ".join(f"{p} predicted" for p in PARTS) + " |",
        "|---|---|" + "---|" * (2 * len(PARTS)),
    ]  # fmt: skip
    for index, level in enumerate(LEVELS):
        points = [trial[index] for trial in document["trials"]]
        served = [
            spread([p["cpu_s_per_request"].get(part, 0.0) * 1e3 for p in points]) for part in PARTS
        ]
        predicted = document["predicted"] if level == LEVELS[-1] else {}
        lines.append(
            f"| {level} | {spread([p['throughput'] for p in points])} | {' | '.join(served)} | "
            + " | ".join(f"{predicted[p] * 1e3:.3f}" if p in predicted else "—" for p in PARTS)
            + " |"
        )
    lines += [
        "",
        "The serving cost's stand-in alone (it computes nothing), CPU ms per request over gRPC:",
        "",
        "| in flight | " + " | ".join(PARTS) + " |",
        "|---|" + "---|" * len(PARTS),
    ]
    for level in document["stand_in"][0]:
        runs = [trial[level] for trial in document["stand_in"]]
        cells = [spread([r[part] * 1e3 for r in runs]) for part in PARTS]
        lines.append(f"| {level} | {' | '.join(cells)} |")
    return [*lines, ""]


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "—"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


if __name__ == "__main__":
    main()
