"""`make demo`: train the digits ensemble, build its repository, serve it on the embedded
Triton server, send the held-out digits through tritonclient and report the accuracies.

    python -m tritongen.examples.demo [--combiner ensemble|bls] [--workdir examples/digits]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from tritongen.bench.compare import naive_plan, run_bench
from tritongen.errors import TritongenError
from tritongen.examples.digits import load_digits_split, write_example
from tritongen.pipeline import Planned, build
from tritongen.render.repository import Combiner
from tritongen.report import plan_table, prediction_table
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.members import MemberModel

console = Console()
DEMO_CONCURRENCY = 64  # enough requests in flight for a grouped plan's full batches


def run_demo(workdir: Path, repository: Path, combiner: Combiner) -> dict[str, float]:
    spec = workdir / "ensemble.yaml"
    with console.status("training three digit classifiers and exporting them to ONNX"):
        spec = write_example(workdir)
    console.print("profiling the members and planning their instances (cached after the first run)")
    planned, repository = build(spec, repository, combiner=combiner)
    ensemble = planned.ensemble
    if planned.profile is not None:
        console.print(plan_table(planned.plan, planned.inventory, planned.profile))
    console.print(f"built {repository} ({combiner.value} combiner)")
    for line in planned.plan.warnings:
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False)
    digits = load_digits_split()
    with console.status("starting the embedded tritonserver"):
        server = EmbeddedServer(repository).start()
    try:
        console.print(f"tritonserver ready on http {server.http_url}, grpc {server.grpc_url}")
        served = [m.name for m in ensemble.members if planned.plan.group_of(m.name) is None]
        started = time.perf_counter()
        accuracies = {
            name: _accuracy(server.http_url, name, digits.test_x, digits.test_y)
            for name in [*served, ensemble.spec.name]
        }
        elapsed = time.perf_counter() - started
    finally:
        with console.status("stopping tritonserver"):
            server.stop()
    grouped = {  # inside a group a member is no Triton model of its own: score it here
        f"{m.name} (onnxruntime here)": _local_accuracy(m, digits.test_x, digits.test_y)
        for m in ensemble.members
        if m.name not in served
    }
    _show(accuracies, grouped, len(digits.test_y), elapsed, ensemble.spec.name)
    if planned.profile is not None:
        _compare(planned)
    return accuracies | grouped


def _compare(planned: Planned) -> None:
    """Serve the naive configuration and the plan one after the other; measure both."""
    ensemble, inventory, profile = planned.ensemble, planned.inventory, planned.profile
    assert profile is not None
    plans = {"naive": naive_plan(ensemble, inventory), "tritongen": planned.plan}
    with console.status(f"measuring naive and tritongen at {DEMO_CONCURRENCY} requests in flight"):
        report = run_bench(
            ensemble, inventory, profile, plans, concurrencies=[DEMO_CONCURRENCY], rounds=1
        ).to_json()
    console.print(prediction_table(report))
    served = report["configs"]["tritongen"]["concurrency"][str(DEMO_CONCURRENCY)]
    if "predicted_throughput" in served:
        console.print(
            f"plan.json predicts {served['predicted_throughput']:.1f} samples/s at "
            f"{DEMO_CONCURRENCY} in flight with the client on this host; served "
            f"{served['throughput']:.1f} ({served['throughput'] / served['predicted_throughput']:.2f}x)"
        )
    ratio = report["ratios"]["tritongen/naive"]
    console.print(
        f"tritongen served {ratio:.2f}x the naive configuration (perf_analyzer, "
        f"{DEMO_CONCURRENCY} requests in flight, on this machine's {inventory.cpu and inventory.cpu.cores} cores)"
    )


def _accuracy(url: str, model: str, x: np.ndarray, y: np.ndarray) -> float:
    client = EnsembleClient(url, model)
    try:
        predictions = client.infer(x).argmax(axis=-1)
    finally:
        client.close()
    return float((predictions == y).mean())


def _local_accuracy(member: MemberModel, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(member.path), providers=["CPUExecutionProvider"])
    feed = {member.inputs[0].name: x.astype(np.float32)}
    (logits,) = session.run([member.output.name], feed)
    return float((np.asarray(logits).argmax(axis=-1) == y).mean())


def _show(
    served: dict[str, float], local: dict[str, float], samples: int, elapsed: float, ensemble: str
) -> None:
    """The accuracies of what tritonserver answered (`served`) and of members scored here."""
    table = Table(title=f"Held-out digits ({samples} images)")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for name, accuracy in (served | local).items():
        label = f"[bold]{name} (ensemble, tritonserver)[/]" if name == ensemble else name
        table.add_row(label, f"{accuracy:.2%}")
    console.print(table)
    console.print(f"{len(served) * samples} rows served by tritonserver in {elapsed:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combiner", choices=[c.value for c in Combiner], default="ensemble")
    parser.add_argument("--workdir", type=Path, default=Path("examples/digits"))
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args(argv)
    try:
        run_demo(args.workdir, args.repository, Combiner(args.combiner))
    except TritongenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
