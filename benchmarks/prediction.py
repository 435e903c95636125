"""Predicted against served throughput for every configuration tritongen builds or considers,
on three ensembles (digits, vision, heavy), in one run:

- naive and batch_only (the baselines), tritongen's plan, and the plan of the other shape
  (members served separately when the plan groups them, and grouped when it does not);
- each predicted by the serving model with perf_analyzer on this machine, then served on the
  embedded tritonserver and measured with perf_analyzer over gRPC at several concurrencies;
- the ratio served/predicted at the best concurrency (target: 0.90–1.10).

    .venv/bin/python benchmarks/prediction.py [--examples digits,vision,heavy] [--rounds 3]

Writes benchmarks/prediction.md and benchmarks/prediction.json (`--out NAME`: NAME.md and
NAME.json in benchmarks/, e.g. prediction_text for `--examples text`). The JSON keeps each
example's profile and devices, so that `--replay FILE` predicts that run's plans again with the
serving model as it is now (writing prediction_replay.md), without serving anything: for working
on the model, not for the record.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from common import OUT, TRIALS, Run, measure_example, summary, write_report

from tritongen.bench.compare import prediction_fields
from tritongen.plan.plan import Plan
from tritongen.plan.serving_model import predict_plan
from tritongen.profile.profile import Profile
from tritongen.spec.devices import load_inventory


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="digits,vision,heavy")
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--replay", type=Path, help="a prediction.json to predict again")
    parser.add_argument("--out", default="prediction", help="NAME: writes NAME.md, NAME.json")
    args = parser.parse_args()
    if args.replay:
        recorded = json.loads(args.replay.read_text())
        documents = {name: replay(document) for name, document in recorded.items()}
        lines = summary(documents, [f"Replayed from `{args.replay}` by the current model.", ""])
        write_report(OUT / "prediction_replay.md", lines)
        return
    run = Run.start(__file__, args)
    workdir = Path(tempfile.mkdtemp(prefix="prediction-"))
    documents = {name: measure_example(name, workdir, args) for name in args.examples.split(",")}
    write_report(OUT / f"{args.out}.md", summary(documents, run.header()), documents)


if __name__ == "__main__":
    main()
