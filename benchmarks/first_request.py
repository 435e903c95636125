"""What warm-up saves: the latency of the first requests after `serve` reports ready, with and
without `model_warmup` in every member's config (issue 11, item 5).

For each example ensemble, the same repository (one CPU instance per member, batch up to the
spec's max_batch_size) is rendered twice, with and without warm-up; each is served REPEATS
times, alternating, on a fresh embedded server. After readiness we time, over HTTP:
the first request (1 row), the first full batch (max_batch_size rows), then the medians of 20
requests of 1 row and of 5 full batches (steady state). Start-to-ready time is reported too:
warm-up moves the cost there.

    .venv/bin/python benchmarks/first_request.py [--repeats 5] [--examples text,vision]
        [--combiners ensemble,bls]

Writes benchmarks/first_request.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT, Run, mean_sd

from tritongen.examples import text, vision
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, render_repository
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

EXAMPLES = {"text": text.write_example, "vision": vision.write_example}
STEADY_REQUESTS = 20
STEADY_FULL = 5
FIGURES = ("ready_s", "first_ms", "first_full_ms", "steady_ms", "steady_full_ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", default="text,vision")
    parser.add_argument("--combiners", default="ensemble,bls")
    args = parser.parse_args()
    run = Run.start(__file__, args)
    workdir = Path(tempfile.mkdtemp(prefix="first-request-"))
    results = {}
    for example in args.examples.split(","):
        ensemble = load_ensemble(load_spec(EXAMPLES[example](workdir / example)))
        for combiner in args.combiners.split(","):
            folder = workdir / f"{example}-{combiner}"
            runs = compare(ensemble, Combiner(combiner), folder, args.repeats)
            results[f"{example} ({combiner})"] = runs
    title = "First-request latency with and without warm-up"
    run.write(OUT / "first_request.md", title, markdown(results))


def compare(
    ensemble: Ensemble, combiner: Combiner, folder: Path, repeats: int
) -> dict[str, list[dict[str, float]]]:
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    repositories = {
        mode: render_repository(
            ensemble, plan, inventory, folder / mode, combiner=combiner, warmup=mode == "warm"
        )
        for mode in ("cold", "warm")
    }
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for repeat in range(repeats):
        for mode in ("cold", "warm") if repeat % 2 == 0 else ("warm", "cold"):
            runs[mode].append(serve_and_time(ensemble, repositories[mode]))
            print(ensemble.spec.name, combiner.value, mode, runs[mode][-1], flush=True)
    return runs


def serve_and_time(ensemble: Ensemble, repository: Path) -> dict[str, float]:
    one = ensemble.sample_inputs(1, seed=1)
    full = ensemble.sample_inputs(ensemble.spec.max_batch_size, seed=2)
    started = time.perf_counter()
    with EmbeddedServer(repository, ready_timeout_s=300) as server:
        ready_s = time.perf_counter() - started
        client = EnsembleClient(server.http_url, ensemble.spec.name)
        first = _timed_ms(client, one)
        first_full = _timed_ms(client, full)
        steady = statistics.median(_timed_ms(client, one) for _ in range(STEADY_REQUESTS))
        steady_full = statistics.median(_timed_ms(client, full) for _ in range(STEADY_FULL))
        client.close()
    return {
        "ready_s": ready_s,
        "first_ms": first,
        "first_full_ms": first_full,
        "steady_ms": steady,
        "steady_full_ms": steady_full,
    }


def _timed_ms(client: EnsembleClient, inputs: Any) -> float:
    started = time.perf_counter()
    client.infer(inputs)
    return 1000 * (time.perf_counter() - started)


def markdown(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    lines = [
        "Each repository (one CPU instance per member, `tritongen build --quick`'s plan) is "
        "served on a fresh embedded server per run, cold and warm alternating. `warm`: every "
        "member's config, and the combine step's (ensemble combiner), carries `model_warmup` at "
        "batch 1 and at its max batch (Triton runs it before the model, hence the server, "
        "reports ready); `cold`: the same without it. The BLS combiner has no warm-up: it would "
        "call members that may not be loaded yet. "
        "Times over HTTP from this process; mean ± sd over the runs, every run listed below.",
        "",
        "| ensemble | warm-up | start to ready s | first request (1 row) ms "
        "| first full batch ms | steady, 1 row ms | steady, full batch ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for example, runs in results.items():
        for mode in ("cold", "warm"):
            cells = " | ".join(mean_sd([r[f] for r in runs[mode]]) for f in FIGURES)
            lines.append(f"| {example} | {'yes' if mode == 'warm' else 'no'} | {cells} |")
    lines += ["", "Every run (ready s / first / first full / steady / steady full, ms):", ""]
    for example, runs in results.items():
        for mode in ("cold", "warm"):
            values = "; ".join(" / ".join(f"{r[f]:.1f}" for f in FIGURES) for r in runs[mode])
            lines.append(f"- {example}, {mode}: {values}")
    return lines


if __name__ == "__main__":
    main()
