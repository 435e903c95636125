"""The `tritongen` command: each subcommand parses its arguments, makes one library call and
prints the result. Every `TritongenError` becomes one line on stderr and exit code 2.

Here the commands of the pipeline (devices, profile, plan, build, bench); those that use a
built repository (serve, infer, k8s) are in `repository.py`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tritongen.bench.perf import PerfPoint
from tritongen.cli.output import console, err_console, say, warn
from tritongen.cli.repository import infer, k8s, serve
from tritongen.errors import TritongenError
from tritongen.plan.problem import Shape
from tritongen.render.repository import Combiner, RenderTarget

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

SpecArg = Annotated[Path, typer.Argument(help="The ensemble spec (YAML).")]


@app.callback()
def _root() -> None:
    """Profile, plan, render and serve an ensemble of DNNs on Triton Inference Server."""


DevicesOpt = Annotated[
    Path | None, typer.Option("--devices", help="DEVICES.json to plan for (default: detect).")
]
LatencyOpt = Annotated[
    float | None,
    typer.Option(
        "--max-p99-ms",
        min=0.001,
        help="The fastest plan whose predicted p99 latency, at the concurrency that reaches its "
        "throughput, stays under this (default: the spec's slo.p99_ms, else none).",
    ),
]
ShapeOpt = Annotated[
    Shape,
    typer.Option(
        help="How members on a CPU are served: auto (the faster as predicted), grouped (in one "
        "model: one call per batch), separate (one model each: lower latency alone).",
    ),
]

ParallelOpt = Annotated[
    bool,
    typer.Option(
        "--parallel-members",
        help="Let a group on a CPU run its members in parallel threads where that cuts a lone "
        "request's latency; its cost under load is not in the serving model (docs/SERVING.md).",
    ),
]


@app.command()
def devices(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the inventory to this DEVICES.json.")
    ] = None,
) -> None:
    """Show the CPU and GPUs of this machine."""
    from tritongen.report import inventory_table
    from tritongen.spec.devices import detect_devices

    inventory = detect_devices()
    console.print(inventory_table(inventory))
    if json_out:
        inventory.save(json_out)
        console.print(f"wrote {json_out}")


@app.command()
def profile(
    spec: SpecArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write profile.json.")
    ] = Path("profile.json"),
    devices_file: DevicesOpt = None,
    batch_sizes: Annotated[
        str | None,
        typer.Option(
            "--batch-sizes",
            help="Comma-separated, e.g. 1,2,4,8 (default: powers "
            "of two up to the spec's max_batch_size).",
        ),
    ] = None,
    budget_s: Annotated[
        float | None,
        typer.Option(
            "--budget-s", help="Aim to finish in about this many seconds (shorter measurements)."
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Measure again even what is cached.")
    ] = False,
) -> None:
    """Measure each member's throughput and memory per device class and batch size."""
    from tritongen.pipeline import profile_members
    from tritongen.profile.profiler import parse_batch_sizes, require_measured
    from tritongen.report import profile_table, skipped_lines

    result, serving = profile_members(
        spec,
        devices_file=devices_file,
        batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes else None,
        budget_s=budget_s,
        use_cache=not no_cache,
        status=console.status,
    )
    result.save(output)
    console.print(profile_table(result))
    say(serving.describe(), *skipped_lines(result))
    console.print(f"wrote {output}")
    warn(*result.warnings)
    require_measured(result, str(output))


@app.command()
def plan(
    spec: SpecArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write plan.json.")
    ] = Path("plan.json"),
    devices_file: DevicesOpt = None,
    profile_file: Annotated[
        Path | None,
        typer.Option("--profile", help="profile.json to plan from (default: measure)."),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option("--measure", help="Re-rank the best candidates by serving and measuring."),
    ] = False,
    shape: ShapeOpt = Shape.auto,
    max_p99_ms: LatencyOpt = None,
    parallel_members: ParallelOpt = False,
) -> None:
    """Decide how many instances of each member go on which device, at which batch size."""
    from tritongen.pipeline import plan_for_command
    from tritongen.report import plan_table

    result, inventory, member_profile = plan_for_command(
        spec,
        devices_file=devices_file,
        profile_file=profile_file,
        measure=measure,
        shape=shape,
        max_p99_ms=max_p99_ms,
        parallel_members=parallel_members,
    )
    result.save(output)
    console.print(plan_table(result, inventory, member_profile))
    console.print(f"wrote {output}")
    warn(*result.warnings)


@app.command()
def build(
    spec: SpecArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Repository folder to write.")
    ] = Path("model_repository"),
    combiner: Annotated[
        Combiner | None,
        typer.Option(
            help="ensemble (default): Triton's scheduler + a combine step; bls: async BLS "
            "(the default when members are served on other nodes).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        RenderTarget,
        typer.Option(help="embedded: Python-backend members; docker: native onnxruntime."),
    ] = RenderTarget.embedded,
    devices_file: DevicesOpt = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="Use this plan.json instead of planning.")
    ] = None,
    profile_file: Annotated[
        Path | None,
        typer.Option("--profile", help="Plan from this profile.json (default: measure)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="No profiling: one CPU instance per member.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also replace a repository tritongen wrote that files were added to since "
            "(never a folder tritongen did not write).",
        ),
    ] = False,
    shape: ShapeOpt = Shape.auto,
    max_p99_ms: LatencyOpt = None,
    parallel_members: ParallelOpt = False,
) -> None:
    """Render a Triton model repository that serves the ensemble as one model."""
    from tritongen.pipeline import build as build_repository
    from tritongen.render.nodes import node_lines
    from tritongen.render.repository import choose_combiner

    planned, repository = build_repository(
        spec,
        output,
        combiner=combiner,
        target=target,
        devices_file=devices_file,
        profile_file=profile_file,
        plan_file=plan_file,
        quick=quick,
        force=force,
        shape=shape,
        max_p99_ms=max_p99_ms,
        parallel_members=parallel_members,
    )
    ensemble, plan = planned.ensemble, planned.plan
    chosen = choose_combiner(ensemble, plan, combiner)
    console.print(
        f"wrote {repository}: model [bold]{ensemble.spec.name}[/] combines "
        f"{len(ensemble.members)} members ({chosen.value} combiner, {target.value} target)"
    )
    say(*node_lines(plan, planned.inventory, repository))
    warn(*plan.warnings)


app.command()(serve)
app.command()(infer)


@app.command()
def bench(
    spec: SpecArg,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the JSON report only.")
    ] = False,
    concurrency: Annotated[
        str, typer.Option(help="Concurrency levels, comma-separated.")
    ] = "1,4,16,64",
    duration_s: Annotated[
        float, typer.Option(help="perf_analyzer measurement window per point (seconds).")
    ] = 3.0,
    rounds: Annotated[int, typer.Option(help="Alternating rounds; medians are reported.")] = 2,
    combiner: Annotated[
        Combiner, typer.Option(help="Combiner mode for every configuration.")
    ] = Combiner.ensemble,
    devices_file: DevicesOpt = None,
    profile_file: Annotated[
        Path | None, typer.Option("--profile", help="profile.json to use (default: measure).")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Folder for throughput.png and allocation.png.")
    ] = None,
    shape: ShapeOpt = Shape.auto,
) -> None:
    """Serve naive, batch_only and tritongen in one run; measure them against the bound."""
    from tritongen.bench.plots import allocation_heatmap, throughput_plot
    from tritongen.pipeline import bench_ensemble

    planned, report = bench_ensemble(
        spec,
        devices_file=devices_file,
        profile_file=profile_file,
        shape=shape,
        combiner=combiner,
        concurrencies=_int_list("--concurrency", concurrency),
        interval_ms=int(duration_s * 1000),
        rounds=rounds,
        on_result=None if json_output else _print_bench_point,
    )
    ensemble, plan = planned.ensemble, planned.plan
    document = report.to_json()
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        throughput_plot(document, plots / "throughput.png", f"{ensemble.spec.name}: throughput")
        allocation_heatmap(plan, plots / "allocation.png", f"{ensemble.spec.name}: tritongen plan")
    if json_output:
        print(json.dumps(document, indent=2))
    else:
        from tritongen.report import bench_table, prediction_table

        console.print(bench_table(document))
        console.print(prediction_table(document))


def _print_bench_point(round_index: int, name: str, points: list[PerfPoint]) -> None:
    summary = ", ".join(f"c={p.concurrency}: {p.throughput:.1f}/s" for p in points)
    err_console.print(f"round {round_index + 1} {name}: {summary}")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TritongenError(f"{flag} {text!r}: expected integers like 1,4,16") from None
    if not values or min(values) < 1:
        raise TritongenError(f"{flag} {text!r}: give one or more integers >= 1")
    return values


app.command()(k8s)


def main() -> None:
    try:
        app(standalone_mode=True)
    except TritongenError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
