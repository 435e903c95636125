"""tritonserver's command line: its addresses and ports, how models are loaded, and the access
policy beyond loopback (the API key that guards the restricted APIs, TLS on gRPC)."""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from tritongen.errors import ServerError
from tritongen.serve.watchdog import API_KEY_HEADER

LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's own defaults
# Beyond loopback, these APIs answer only requests that carry the key in this header:
# model-repository loads models (with uploaded files), shared-memory maps a client's memory,
# trace and logging change what the server writes.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
API_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
POLL_SECONDS = 2  # repository poll period: how soon a model marked by the watchdog reloads


@dataclass(frozen=True)
class GrpcTls:
    """TLS on the server's gRPC endpoint (PEM files); `client_ca` also requires clients to
    present a certificate it signed (mutual TLS)."""

    certificate: Path
    private_key: Path
    client_ca: Path | None = None

    def server_args(self) -> list[str]:
        for path in (self.certificate, self.private_key, self.client_ca):
            if path is not None and not path.is_file():
                raise ServerError(f"{path}: no such file (gRPC TLS); give a PEM file")
        args = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={self.certificate}",
            f"--grpc-server-key={self.private_key}",
        ]
        if self.client_ca is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.client_ca}"]
        return args

    def cli_args(self) -> list[str]:
        """The same, as `tritongen serve` options."""
        args = ["--grpc-tls-cert", str(self.certificate), "--grpc-tls-key", str(self.private_key)]
        return args + (["--grpc-tls-client-ca", str(self.client_ca)] if self.client_ca else [])


def grpc_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> GrpcTls | None:
    """TLS from `serve`'s three options; None when none is given."""
    if cert is None and key is None and client_ca is None:
        return None
    if cert is None or key is None:
        raise ServerError("--grpc-tls-cert and --grpc-tls-key go together")
    return GrpcTls(cert.resolve(), key.resolve(), client_ca and client_ca.resolve())


@dataclass(frozen=True)
class ServerOptions:
    """What the server is told besides where its binary, backends and repository are."""

    host: str
    ports: dict[str, int]  # http, grpc, metrics
    model_control: bool
    api_key: str | None
    grpc_tls: GrpcTls | None
    extra_args: tuple[str, ...]


def server_command(
    binary: Path, backends: Path, repository: Path, options: ServerOptions
) -> list[str]:
    return [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--http-address={options.host}",
        f"--grpc-address={options.host}",
        f"--metrics-address={options.host}",
        f"--http-port={options.ports['http']}",
        f"--grpc-port={options.ports['grpc']}",
        f"--metrics-port={options.ports['metrics']}",
        *_model_control_args(options.model_control),
        *_restricted_args(options.api_key),
        *(options.grpc_tls.server_args() if options.grpc_tls else []),
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
        *options.extra_args,
    ]


def _model_control_args(model_control: bool) -> list[str]:
    """Remote load/unload only when asked. Otherwise Triton polls the repository, which
    refuses remote load/unload and lets the watchdog reload a model whose stub died."""
    if model_control:
        return ["--model-control-mode=explicit", "--load-model=*"]
    return ["--model-control-mode=poll", f"--repository-poll-secs={POLL_SECONDS}"]


def _restricted_args(api_key: str | None) -> list[str]:
    if api_key is None:
        return []
    rule = f"{','.join(RESTRICTED_APIS)}:{API_KEY_HEADER}={api_key}"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]


def chosen_ports(host: str, ports: dict[str, int | None]) -> dict[str, int]:
    """`ports` with each one left None replaced by a free port; a given one must be free."""
    chosen = {}
    for name, port in ports.items():
        if port is None:
            chosen[name] = free_port(host)
        else:
            check_port_free(host, port, f"--{name}-port")
            chosen[name] = port
    return chosen


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServerError(
                f"port {port} on {host} is in use; free it or pick another with {flag}"
            ) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


def access_key(
    host: str, *, model_control: bool, confirmed: bool, api_key: str | None
) -> str | None:
    """The key that guards `RESTRICTED_APIS`: `api_key` when given, a new random one when
    `host` is beyond loopback, else None. Remote model control beyond loopback lets anyone
    who reaches the address run code on this machine, so it needs `confirmed` as well."""
    if api_key is not None and not API_KEY_PATTERN.fullmatch(api_key):
        raise ServerError("--api-key: use 16-256 characters from A-Z a-z 0-9 _ -")
    if is_loopback(host):
        return api_key
    if model_control and not confirmed:
        raise ServerError(
            f"--model-control on --host {host} lets anyone who reaches it load models with "
            "files they upload; add --allow-remote-model-control to confirm, or bind 127.0.0.1"
        )
    return api_key or secrets.token_urlsafe(24)
