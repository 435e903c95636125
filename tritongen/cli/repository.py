"""The `tritongen` commands that use a built repository: serve it, send it inputs, deploy it
on Kubernetes (registered on the app in `tritongen.cli`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from tritongen.cli.output import console, say, warn
from tritongen.errors import TritongenError
from tritongen.render.k8s import NGC_IMAGE, RepositorySource
from tritongen.serve.arguments import DEFAULT_PORTS, LOOPBACK, access_key, grpc_tls
from tritongen.serve.background import ServeRequest, ready_lines, serve_detached, serve_here
from tritongen.serve.client import Protocol
from tritongen.serve.watchdog import API_KEY_HEADER

PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="0: a free port.")]


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
    request = ServeRequest(
        repository,
        host,
        {"http": http_port, "grpc": grpc_port, "metrics": metrics_port},
        log_file,
        model_control,
        allow_remote_model_control,
        grpc_tls(grpc_tls_cert, grpc_tls_key, grpc_tls_client_ca),
        key,
    )
    if background:
        print(json.dumps(serve_detached(request)), flush=True)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s tritongen: %(message)s")
    serve_here(
        request,
        ready_fd=ready_fd,
        announce=lambda server: say(*ready_lines(server)),
        on_interrupt=lambda: console.print("stopping tritonserver..."),
    )


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
    from tritongen.serve.client import EnsembleClient, read_rows, top_k

    if not model:
        raise TritongenError("infer: --model is required (the ensemble's name in the spec)")
    client = EnsembleClient(url, model, protocol)
    batch = read_rows(data, random, client.signature)
    output = client.infer(batch)
    classes, scores = top_k(output.reshape(len(output), -1), top)
    console.print(top_k_table(classes, scores))


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
        warn("the init container unpacks the archive unchecked; pass --repository-sha256")
    console.print(
        f"wrote {', '.join(str(p) for p in written)}; apply with `kubectl apply -f {output}`"
    )
