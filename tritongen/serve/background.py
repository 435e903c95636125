"""The process that `tritongen serve` keeps the server in: in the foreground until SIGTERM or
Ctrl-C, or detached with `--background`.

The detached process is `tritongen serve` in the foreground: it runs tritonserver, restarts it
when it dies and keeps its watchdog, and it stops everything on SIGTERM. It reports readiness
through a pipe, so that the command that started it can print the ports and return.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritongen.errors import ServerError
from tritongen.serve.arguments import GrpcTls
from tritongen.serve.server import EmbeddedServer, temp_log
from tritongen.serve.watchdog import API_KEY_HEADER, GRPC_API_KEY_HEADER

READY_FD_OPTION = "--ready-fd"


@dataclass(frozen=True)
class ServeRequest:
    """What `tritongen serve` was asked for, with its access key and TLS already decided."""

    repository: Path
    host: str
    ports: dict[str, int]  # http, grpc, metrics; 0: a free port
    log_file: Path | None
    model_control: bool
    allow_remote_model_control: bool
    grpc_tls: GrpcTls | None
    api_key: str | None


def serve_here(
    request: ServeRequest,
    *,
    ready_fd: int | None,
    announce: Callable[[EmbeddedServer], None],
    on_interrupt: Callable[[], None],
) -> None:
    """The server in this process until SIGTERM or Ctrl-C; its readiness reported through
    `ready_fd` (when detached) or `announce`d."""
    server = EmbeddedServer(
        request.repository,
        host=request.host,
        http_port=request.ports["http"] or None,
        grpc_port=request.ports["grpc"] or None,
        metrics_port=request.ports["metrics"] or None,
        model_control=request.model_control,
        log_path=request.log_file,
        api_key=request.api_key,
        grpc_tls=request.grpc_tls,
    ).start()
    if ready_fd is not None:
        report_ready(ready_fd, ready_info(server))
    else:
        announce(server)
    wait_until_interrupted(server, on_interrupt)


def serve_detached(request: ServeRequest) -> dict[str, Any]:
    """`tritongen serve` for `request` in a detached process; what it reports once ready
    (`ready_info`). The key goes through the environment, never the command line."""
    log_path = request.log_file or temp_log()
    ports, tls = request.ports, request.grpc_tls
    args = [
        "serve", str(request.repository.resolve()), "--host", request.host,
        "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
        "--metrics-port", str(ports["metrics"]), "--log-file", str(log_path.resolve()),
        *(["--model-control"] if request.model_control else []),
        *(["--allow-remote-model-control"] if request.allow_remote_model_control else []),
        *(tls.cli_args() if tls else []),
    ]  # fmt: skip
    env = {**os.environ, **({"TRITONGEN_API_KEY": request.api_key} if request.api_key else {})}
    return start_detached(args, log_path, env)


def start_detached(args: list[str], log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `tritongen ARGS` detached, its output appended to `log_path`, and return the JSON
    object it writes to the pipe once the server is ready; its own error line otherwise."""
    read, write = os.pipe()
    try:
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "tritongen", *args, READY_FD_OPTION, str(write)],
                pass_fds=(write,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
    finally:
        os.close(write)
    with os.fdopen(read) as ready:
        line = ready.readline()  # EOF when the child exits without getting ready
    if line:
        return dict(json.loads(line))
    code = child.wait()
    raise ServerError(_last_error(log_path) or f"the server process exited with code {code}")


def report_ready(fd: int, info: dict[str, Any]) -> None:
    with os.fdopen(fd, "w") as ready:
        ready.write(json.dumps(info) + "\n")


def ready_info(server: EmbeddedServer) -> dict[str, object]:
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


def ready_lines(server: EmbeddedServer) -> list[str]:
    """What `serve` in the foreground says once the server is ready."""
    lines = [
        f"tritonserver ready (pid {server.pid}): http {server.http_url}, grpc {server.grpc_url}, "
        f"metrics {server.metrics_url}; log {server.log_path}. Ctrl-C stops."
    ]
    if server.api_key:
        lines.append(
            f"model-repository, shared-memory, trace and logging requests need the key "
            f"{server.api_key} in the header {API_KEY_HEADER} (HTTP) or {GRPC_API_KEY_HEADER} "
            "(gRPC)"
        )
    return lines


def wait_until_interrupted(server: EmbeddedServer, on_interrupt: Callable[[], None]) -> None:
    """Until SIGTERM or Ctrl-C (`on_interrupt` says so), or until the server died too often
    to be restarted (a `ServerError`); then the server is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while not server.gave_up.wait(1.0):
            pass
        raise ServerError(server.failure or f"tritonserver stopped; see {server.log_path}")
    except KeyboardInterrupt:
        on_interrupt()
    finally:
        server.stop()


def _last_error(log_path: Path) -> str | None:
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None
