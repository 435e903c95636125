"""`tritongen bench` on the text example (three transformer encoders, input_ids and
attention_mask), in one run: profile + plan (timed), then naive, batch_only and tritongen
compared in one run against the CPU bound, perf_analyzer fed valid ids and masks (a JSON file).

    .venv/bin/python benchmarks/bench_text.py [--rounds 3] [--duration-s 3] [--concurrency 1,4,16]

Writes benchmarks/bench_text.{md,json}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run, round_figures, trials_markdown

from tritongen.bench.compare import bench_plans, levels_markdown, prediction_markdown, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.examples.text import write_example
from tritongen.plan.search import make_plan
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    run = Run.start(__file__, args)
    spec = load_spec(write_example(Path(tempfile.mkdtemp(prefix="bench-text-")) / "text"))
    ensemble = load_ensemble(spec)
    inventory = detect_devices()
    profile, _, profile_s = measure_profile(ensemble, inventory, use_cache=False)
    started = time.perf_counter()
    plan = make_plan(spec, inventory, profile)
    plan_s = time.perf_counter() - started
    report = run_bench(
        ensemble, inventory, profile, bench_plans(ensemble, inventory, profile, plan),
        concurrencies=[int(c) for c in args.concurrency.split(",")],
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, name, points: print(f"round {r + 1} {name}: {[round(p.throughput, 1) for p in points]}", flush=True),
    )  # fmt: skip
    document = report.to_json() | {"profile_s": round(profile_s, 1), "plan_s": round(plan_s, 2)}
    document["trials"] = round_figures(report)
    title = "tritongen bench: the text ensemble on this machine"
    run.write(OUT / "bench_text.md", title, markdown(document), data=document)


def markdown(doc: dict[str, Any]) -> list[str]:
    bound = doc["bound"]["throughput"]
    plan = doc["plans"]["tritongen"]
    lines = [
        f"{doc['seconds']:.0f} s of serving; serving cost + profile {doc['profile_s']} s, plan "
        f"{doc['plan_s']} s.",
        "",
        "Members: small, medium, deep (transformer encoders of 1, 2, 4 blocks, width 64, 96, "
        "128; input_ids + attention_mask, 32 tokens, INT64 → 4 classes), mean of softmax. "
        "perf_analyzer sends ids drawn from the vocabulary and masks of ones (a JSON input file).",
        f"Bound (cores / Σ one-thread CPU seconds per sample): **{bound:.1f} samples/s**.",
        "",
    ]
    lines += [
        f"Over {doc['rounds']} trials:",
        "",
        *trials_markdown(doc["trials"]),
        "Every level (median over trials):",
        "",
        *levels_markdown(doc),
        f"tritongen's plan: allocation {plan['allocation']}, batch sizes {plan['batch_size']}, "
        f"threads {plan['threads']}, groups {plan.get('groups', {})}, predicted "
        f"{plan['predicted_throughput']:.1f} samples/s by the serving model (clients elsewhere).",
        "",
        *prediction_markdown(doc),
    ]
    return lines


if __name__ == "__main__":
    main()
