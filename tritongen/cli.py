"""The `tritongen` command: each subcommand parses its arguments, makes one library call and
prints the result. Every `TritongenError` becomes one line on stderr and exit code 2."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console

from tritongen.bench.perf import PerfPoint
from tritongen.errors import TritongenError
from tritongen.plan.problem import Shape
from tritongen.render.k8s import NGC_IMAGE, RepositorySource
from tritongen.render.repository import Combiner, Target
from tritongen.serve.background import report_ready, start_detached
from tritongen.serve.client import ModelSignature, Protocol
from tritongen.serve.server import (
    DEFAULT_PORTS,
    LOOPBACK,
    EmbeddedServer,
    GrpcTls,
    access_key,
)
from tritongen.serve.watchdog import API_KEY_HEADER, GRPC_API_KEY_HEADER

if TYPE_CHECKING:
    from collections.abc import Callable

    from tritongen.pipeline import Planned
    from tritongen.plan.plan import Plan
    from tritongen.plan.problem import Problem
    from tritongen.plan.search import PlanEvaluator
    from tritongen.spec.devices import Inventory

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

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
    from tritongen.bench.serving_cost import serving_cost
    from tritongen.pipeline import resolve_inventory
    from tritongen.profile.profiler import parse_batch_sizes, profile_ensemble, require_measured
    from tritongen.report import profile_table, skipped_lines
    from tritongen.spec.ensemble import load_spec
    from tritongen.spec.members import load_ensemble

    sizes = parse_batch_sizes(batch_sizes) if batch_sizes else None  # before minutes of work
    loaded = load_spec(spec)
    ensemble = load_ensemble(loaded)
    inventory = resolve_inventory(loaded, devices_file)
    with console.status("measuring what a served call costs on the embedded server"):
        serving = serving_cost(ensemble, inventory, use_cache=not no_cache)
    result = profile_ensemble(
        ensemble,
        inventory,
        batch_sizes=sizes,
        budget_s=budget_s,
        use_cache=not no_cache,
        serving=serving,
    )
    result.save(output)
    console.print(profile_table(result))
    console.print(serving.describe(), markup=False, highlight=False)
    for line in skipped_lines(result):
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote {output}")
    for line in result.warnings:
        _warn(line)
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
) -> None:
    """Decide how many instances of each member go on which device, at which batch size."""
    from tritongen.pipeline import plan_ensemble, plan_from_profile, resolve_inventory
    from tritongen.profile.profile import load_profile
    from tritongen.report import plan_table
    from tritongen.spec.ensemble import load_spec

    if measure:
        planned = plan_ensemble(
            spec,
            devices_file=devices_file,
            profile_file=profile_file,
            shape=shape,
            max_p99_ms=max_p99_ms,
        )
        assert planned.profile is not None  # plan_ensemble keeps the profile it planned from
        result = plan_from_profile(
            planned.ensemble.spec,
            planned.inventory,
            planned.profile,
            refine_with=_measured_evaluator(planned, max_p99_ms),
            shape=shape,
            max_p99_ms=max_p99_ms,
        )
        inventory, member_profile = planned.inventory, planned.profile
    elif profile_file is not None:  # plan for hardware we may not have: open no model file
        loaded = load_spec(spec)
        inventory, member_profile = (
            resolve_inventory(loaded, devices_file),
            load_profile(profile_file),
        )
        result = plan_from_profile(
            loaded, inventory, member_profile, shape=shape, max_p99_ms=max_p99_ms
        )
    else:
        planned = plan_ensemble(spec, devices_file=devices_file, shape=shape, max_p99_ms=max_p99_ms)
        assert planned.profile is not None
        result, inventory, member_profile = planned.plan, planned.inventory, planned.profile
    result.save(output)
    console.print(plan_table(result, inventory, member_profile))
    console.print(f"wrote {output}")
    for line in result.warnings:
        _warn(line)


def _measured_evaluator(
    planned: Planned, max_p99_ms: float | None
) -> Callable[[Problem], PlanEvaluator]:
    """Serve each shortlisted candidate on the embedded server; perf_analyzer measures it."""
    import tempfile

    from tritongen.bench.compare import ServedMeasurer
    from tritongen.plan.search import PlanEvaluator

    workdir = Path(tempfile.mkdtemp(prefix="tritongen-plan-"))
    measurer = ServedMeasurer(planned.ensemble, planned.inventory, workdir, max_p99_ms=max_p99_ms)
    assert planned.profile is not None  # plan_ensemble profiles unless given a plan
    cost = planned.profile.serving_cost
    return lambda problem: PlanEvaluator(problem, measurer, cost)


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
        Target, typer.Option(help="embedded: Python-backend members; docker: native onnxruntime.")
    ] = Target.embedded,
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
) -> None:
    """Render a Triton model repository that serves the ensemble as one model."""
    from tritongen.pipeline import build as build_repository
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
    )
    ensemble, plan = planned.ensemble, planned.plan
    chosen = choose_combiner(ensemble, plan, combiner)
    console.print(
        f"wrote {repository}: model [bold]{ensemble.spec.name}[/] combines "
        f"{len(ensemble.members)} members ({chosen.value} combiner, {target.value} target)"
    )
    for line in _node_lines(plan, planned.inventory, repository):
        console.print(line, markup=False, highlight=False)
    for line in plan.warnings:
        _warn(line)


def _node_lines(plan: Plan, inventory: Inventory, repository: Path) -> list[str]:
    """Where each node's repository is and at which gRPC url the combiner expects it."""
    from tritongen.render.repository import NODES_DIR

    if not plan.spans_nodes:
        return []
    lines = []
    for node in plan.node_names:
        members = ", ".join(m for m, n in plan.nodes.items() if n == node)
        folder = repository / NODES_DIR / node
        if node == plan.primary_node:
            lines.append(f"  node {node} (combiner, {members}): serve {folder}; clients call it")
        else:
            url = inventory.node_url(node)
            lines.append(f"  node {node} ({members}): serve {folder} with gRPC at {url}")
    return lines


PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="0: a free port.")]


@app.command()
def serve(
    repository: Annotated[Path, typer.Argument(help="A repository from `tritongen build`.")] = Path(
        "model_repository"
    ),
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you ask.")] = LOOPBACK,
    http_port: PortOpt = DEFAULT_PORTS["http"],
    grpc_port: PortOpt = DEFAULT_PORTS["grpc"],
    metrics_port: PortOpt = DEFAULT_PORTS["metrics"],
    background: Annotated[
        bool, typer.Option("--background", help="Return once ready; print one JSON line.")
    ] = False,
    model_control: Annotated[
        bool, typer.Option("--model-control", help="Allow remote load/unload (off by default).")
    ] = False,
    allow_remote_model_control: Annotated[
        bool,
        typer.Option(
            "--allow-remote-model-control",
            help="Confirm --model-control on a --host beyond loopback.",
        ),
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TRITONGEN_API_KEY",
            help=f"Key that model-repository, shared-memory, trace and logging requests must "
            f"carry in the `{API_KEY_HEADER}` header (default beyond loopback: a new one, "
            "printed).",
            show_default=False,
        ),
    ] = None,
    grpc_tls_cert: Annotated[
        Path | None, typer.Option(help="Serve gRPC over TLS with this certificate (PEM).")
    ] = None,
    grpc_tls_key: Annotated[
        Path | None, typer.Option(help="... and this private key (PEM).")
    ] = None,
    grpc_tls_client_ca: Annotated[
        Path | None, typer.Option(help="Require client certificates signed by this CA (PEM).")
    ] = None,
    log_file: Annotated[
        Path | None, typer.Option(help="Server log (default: a temp file).")
    ] = None,
    ready_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the embedded Triton server on a repository (ports 8000, 8001, 8002 by default).
    It restarts tritonserver if it dies, and a watchdog reloads a model whose process died."""
    key = access_key(
        host, model_control=model_control, confirmed=allow_remote_model_control, api_key=api_key
    )
    tls = _grpc_tls(grpc_tls_cert, grpc_tls_key, grpc_tls_client_ca)
    if background:
        log_path = log_file or _temp_log()
        args = [
            "serve", str(repository.resolve()), "--host", host, "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
            "--log-file", str(log_path.resolve()),
            *(["--model-control"] if model_control else []),
            *(["--allow-remote-model-control"] if allow_remote_model_control else []),
            *(tls.cli_args() if tls else []),
        ]  # fmt: skip
        env = {**os.environ, **({"TRITONGEN_API_KEY": key} if key else {})}
        print(json.dumps(start_detached(args, log_path, env)), flush=True)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s tritongen: %(message)s")
    server = EmbeddedServer(
        repository,
        host=host,
        http_port=http_port or None,
        grpc_port=grpc_port or None,
        metrics_port=metrics_port or None,
        model_control=model_control,
        log_path=log_file,
        api_key=key,
        grpc_tls=tls,
    ).start()
    if ready_fd is not None:
        report_ready(ready_fd, _ready_info(server))
    else:
        _print_ready(server)
    _wait_until_interrupted(server)


def _temp_log() -> Path:
    handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
    os.close(handle)
    return Path(name)


def _ready_info(server: EmbeddedServer) -> dict[str, object]:
    """What `serve --background` prints: this process (SIGTERM stops it all), the ports."""
    return {
        "pid": os.getpid(),
        "server_pid": server.pid,
        "http_port": server.http_port,
        "grpc_port": server.grpc_port,
        "metrics_port": server.metrics_port,
        "log": str(server.log_path),
        **({"api_key": server.api_key} if server.api_key else {}),
    }


def _print_ready(server: EmbeddedServer) -> None:
    console.print(
        f"tritonserver ready (pid {server.pid}): http {server.http_url}, grpc {server.grpc_url}, "
        f"metrics {server.metrics_url}; log {server.log_path}. Ctrl-C stops.",
        markup=False,
        highlight=False,
    )
    if server.api_key:
        console.print(
            f"model-repository, shared-memory, trace and logging requests need the key "
            f"{server.api_key} in the header {API_KEY_HEADER} (HTTP) or {GRPC_API_KEY_HEADER} "
            "(gRPC)",
            markup=False,
            highlight=False,
        )


def _grpc_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> GrpcTls | None:
    if cert is None and key is None and client_ca is None:
        return None
    if cert is None or key is None:
        raise TritongenError("--grpc-tls-cert and --grpc-tls-key go together")
    return GrpcTls(cert.resolve(), key.resolve(), client_ca and client_ca.resolve())


def _wait_until_interrupted(server: EmbeddedServer) -> None:
    """Until SIGTERM or Ctrl-C, or until the server died too often to be restarted."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while not server.gave_up.wait(1.0):
            pass
        raise TritongenError(server.failure or f"tritonserver stopped; see {server.log_path}")
    except KeyboardInterrupt:
        console.print("stopping tritonserver...")
    finally:
        server.stop()


@app.command()
def infer(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="A .npy file of inputs (first axis = rows), or an .npz file with one array "
            "per input name for a model with several inputs."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="The ensemble's name (the spec's `name`).")] = "",
    url: Annotated[str, typer.Option(help="host:port of the server.")] = "127.0.0.1:8000",
    protocol: Annotated[
        Protocol, typer.Option(help="http or grpc (give the matching port).")
    ] = Protocol.http,
    random: Annotated[
        int,
        typer.Option(
            "--random", help="Send N random rows instead (integer masks get ones, other ints 0)."
        ),
    ] = 0,
    top: Annotated[int, typer.Option("--top", "-k", help="Classes shown per row.")] = 3,
) -> None:
    """Send inputs to a served ensemble and print the top-k classes per row."""
    from tritongen.report import top_k_table
    from tritongen.serve.client import EnsembleClient, top_k

    if not model:
        raise TritongenError("infer: --model is required (the ensemble's name in the spec)")
    client = EnsembleClient(url, model, protocol)
    batch = _load_rows(data, random, client.signature)
    output = client.infer(batch)
    classes, scores = top_k(output.reshape(len(output), -1), top)
    console.print(top_k_table(classes, scores))


def _load_rows(data: Path | None, random: int, signature: ModelSignature) -> dict[str, np.ndarray]:
    """Input name -> rows, from a .npy (one input) or .npz (arrays named after the inputs)
    file, or `random` rows with the values tritongen feeds by default (spec/values.py)."""
    from tritongen.spec.values import default_fill

    if data is None and random <= 0:
        raise TritongenError("infer: give a .npy or .npz file, or --random N")
    if data is None:
        rng = np.random.default_rng(0)
        return {
            i.name: default_fill(i.name, i.dtype.name).sample(
                rng, i.dtype.name, (random, *(d if d > 0 else 1 for d in i.dims))
            )
            for i in signature.inputs
        }
    arrays = _read_arrays(data, signature)
    for i in signature.inputs:
        shape = arrays[i.name].shape[1:]
        if len(shape) != len(i.dims) or any(
            d > 0 and d != s for d, s in zip(i.dims, shape, strict=True)
        ):
            raise TritongenError(
                f"{data}: rows of {i.name} have shape {list(shape)}, the model takes "
                f"{list(i.dims)}; reshape the array"
            )
    return arrays


def _read_arrays(data: Path, signature: ModelSignature) -> dict[str, np.ndarray]:
    names = [i.name for i in signature.inputs]
    try:
        loaded = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TritongenError(f"{data}: not a readable .npy or .npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise TritongenError(
                f"{data}: the model takes {len(names)} inputs ({', '.join(names)}); give an "
                ".npz file with one array per input (numpy.savez(path, name=array, ...))"
            )
        return {names[0]: loaded}
    with loaded:
        missing = [n for n in names if n not in loaded.files]
        if missing:
            raise TritongenError(
                f"{data}: has no array named {missing[0]!r}; the model takes {', '.join(names)}"
            )
        return {n: loaded[n] for n in names}


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
    from tritongen.bench.compare import bench_plans, run_bench
    from tritongen.bench.plots import allocation_heatmap, throughput_plot
    from tritongen.pipeline import plan_ensemble, shape_for

    levels = _int_list("--concurrency", concurrency)
    planned = plan_ensemble(
        spec,
        devices_file=devices_file,
        profile_file=profile_file,
        shape=shape_for(combiner, shape),
    )
    ensemble, plan = planned.ensemble, planned.plan
    assert planned.profile is not None  # plan_ensemble profiles unless given a plan
    report = run_bench(
        ensemble,
        planned.inventory,
        planned.profile,
        bench_plans(ensemble, planned.inventory, planned.profile, plan),
        concurrencies=levels,
        interval_ms=int(duration_s * 1000),
        rounds=rounds,
        combiner=combiner,
        on_result=None if json_output else _print_bench_point,
    )
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


@app.command()
def k8s(
    repository: Annotated[
        Path, typer.Argument(help="A repository from `tritongen build --target docker`.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder to write the manifests into.")
    ] = Path("deploy"),
    name: Annotated[
        str | None, typer.Option(help="Deployment/Service name (default: the ensemble's).")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    image: Annotated[str, typer.Option(help="The tritonserver image.")] = NGC_IMAGE,
    repository_source: Annotated[
        RepositorySource,
        typer.Option(help="pvc: mount a claim holding the repository; init: download a .tar.gz."),
    ] = RepositorySource.pvc,
    claim: Annotated[
        str | None, typer.Option(help="pvc: the claim's name (default: NAME-models).")
    ] = None,
    repository_url: Annotated[
        str | None, typer.Option(help="init: URL of a .tar.gz of the repository.")
    ] = None,
    repository_sha256: Annotated[
        list[str] | None,
        typer.Option(
            help="init: the archive's sha256, checked before it is unpacked "
            "(node=<sha256> once per node for a repository across nodes).",
            show_default=False,
        ),
    ] = None,
    min_replicas: Annotated[int, typer.Option(help="HPA lower bound.")] = 1,
    max_replicas: Annotated[int, typer.Option(help="HPA upper bound.")] = 4,
    queue_target_us: Annotated[
        int, typer.Option(help="Scale up above this average queue time per request (µs).")
    ] = 50_000,
) -> None:
    """Render Kubernetes manifests (Deployment, Service, HPA, Prometheus adapter rule)."""
    from tritongen.render.k8s import K8sOptions, render_manifests

    options = K8sOptions(
        name=name,
        namespace=namespace,
        image=image,
        source=repository_source,
        claim=claim,
        repository_url=repository_url,
        repository_sha256=tuple(repository_sha256 or ()),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        queue_target_us=queue_target_us,
    )
    written = render_manifests(repository, output, options)
    if repository_source is RepositorySource.init and not repository_sha256:
        _warn("the init container unpacks the archive unchecked; pass --repository-sha256")
    console.print(
        f"wrote {', '.join(str(p) for p in written)}; apply with `kubectl apply -f {output}`"
    )


def _warn(line: str) -> None:
    err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    try:
        app(standalone_mode=True)
    except TritongenError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
