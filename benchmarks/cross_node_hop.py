"""What a cross-node hop costs: the BLS combiner calling one member on another tritonserver over
gRPC instead of in-process (BLS), on the demo ensemble, at concurrency 1.

Three embedded servers on loopback: node A serves `--remote-member` alone; node B "local"
serves the whole ensemble; node B "remote" serves it with that member's `url` set to node A.
Loopback has no wire time, so the difference is the software cost of the hop (serialisation,
gRPC, a second server's scheduler); a real network adds its round trip on top.

    .venv/bin/python benchmarks/cross_node_hop.py [--rounds 3] [--out benchmarks/cross_node_hop.md]
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path

import yaml
from common import TRIALS, Run, mean_sd

from tritongen.bench.perf import PerfPoint, measure
from tritongen.examples.digits import write_example
from tritongen.pipeline import build
from tritongen.render.repository import Combiner
from tritongen.serve.server import EmbeddedServer


def write_variant(spec: Path, name: str, edit) -> Path:
    data = yaml.safe_load(spec.read_text())
    edit(data)
    path = spec.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def only_member(member: str):
    def edit(data: dict) -> None:
        data["name"] = "node_a"
        data["members"] = [m for m in data["members"] if m["name"] == member]

    return edit


def remote_member(member: str, url: str):
    def edit(data: dict) -> None:
        for m in data["members"]:
            if m["name"] == member:
                m["url"] = url

    return edit


def start(stack: ExitStack, spec: Path, out: Path, combiner: Combiner) -> EmbeddedServer:
    _, repository = build(spec, out, combiner=combiner, force=True)
    return stack.enter_context(EmbeddedServer(repository, ready_timeout_s=300))


def measure_once(server: EmbeddedServer, model: str, args: argparse.Namespace) -> PerfPoint:
    return measure(
        server.grpc_url,
        model,
        [1],
        interval_ms=args.interval_ms,
        stability_percent=args.stability_percent,
        max_trials=10,
    )[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--stability-percent", type=int, default=20)
    parser.add_argument("--remote-member", default="cnn")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/cross_node_hop.md"))
    args = parser.parse_args()
    run = Run.start(__file__, args)
    root = Path(tempfile.mkdtemp(prefix="cross-node-"))
    spec = write_example(root / "digits")
    member = args.remote_member
    runs: dict[str, list[PerfPoint]] = {"local": [], "remote": [], "member_on_a": []}
    with ExitStack() as stack:
        node_a = start(
            stack, write_variant(spec, "a", only_member(member)), root / "a", Combiner.ensemble
        )
        local = start(stack, spec, root / "local", Combiner.bls)
        remote_spec = write_variant(spec, "remote", remote_member(member, node_a.grpc_url))
        remote = start(stack, remote_spec, root / "remote", Combiner.bls)
        for _ in range(args.rounds):  # alternate so that drift cancels
            runs["local"].append(measure_once(local, "digits", args))
            runs["remote"].append(measure_once(remote, "digits", args))
            runs["member_on_a"].append(measure_once(node_a, member, args))
    title = f"Cross-node hop: `{member}` served by another tritonserver (loopback)"
    run.write(args.out, title, render_report(runs, args))


def render_report(runs: dict[str, list[PerfPoint]], args: argparse.Namespace) -> list[str]:
    def values(key: str, field: str) -> list[float]:
        return [getattr(point, field) for point in runs[key]]

    rows = {
        "local": "whole ensemble on node B (all members in-process, BLS)",
        "remote": f"same, `{args.remote_member}` called on node A over gRPC",
        "member_on_a": f"`{args.remote_member}` alone on node A, called from outside",
    }
    lines = [
        "perf_analyzer, gRPC, batch 1, concurrency 1; mean ± sd over "
        f"{args.rounds} alternating trials.",
        "",
        "| what | throughput (infer/s) | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for key, label in rows.items():
        lines.append(
            f"| {label} | {mean_sd(values(key, 'throughput'))} | "
            f"{mean_sd(values(key, 'p50_ms'), 2)} | {mean_sd(values(key, 'p99_ms'), 2)} |"
        )
    hop = [
        r - lo for r, lo in zip(values("remote", "p50_ms"), values("local", "p50_ms"), strict=True)
    ]
    lines += [
        "",
        f"Hop cost at p50: **{mean_sd(hop, 2)} ms** per request (remote − local, per trial). Loopback only: a real "
        "network adds its round-trip time; members run concurrently, so the hop adds to the "
        "latency only where the remote member is the slowest branch.",
    ]
    return lines


if __name__ == "__main__":
    main()
