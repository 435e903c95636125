"""The embedded Triton server's process: started, waited for until ready, restarted when it
dies, stopped; its log summarized and its metrics read. Where the binary is comes from
`install`, its command line from `arguments`.

    with EmbeddedServer("model_repository") as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
"""

from __future__ import annotations

import compileall
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from tritongen.errors import ServerError
from tritongen.lifetime import ends_with_this_process
from tritongen.render.group import busy_files
from tritongen.render.nodes import NODES_DIR, served_nodes
from tritongen.serve.arguments import (
    DEFAULT_PORTS,
    LOOPBACK,
    POLL_SECONDS,
    GrpcTls,
    ServerOptions,
    access_key,
    chosen_ports,
    free_port,
    server_command,
)
from tritongen.serve.health import metrics_answering, server_ready
from tritongen.serve.install import (
    TritonInstall,
    find_tritonserver,
    prepare_backends,
    server_environment,
)
from tritongen.serve.watchdog import (
    Watchdog,
    report_crash_while_loading,
    report_given_up,
    report_restart,
)

MAX_RESTARTS = 5  # deaths of tritonserver within RESTART_WINDOW_S that are restarted
RESTART_WINDOW_S = 600.0

__all__ = [  # the serve stage's server names, importable from here
    "DEFAULT_PORTS",
    "LOOPBACK",
    "POLL_SECONDS",
    "EmbeddedServer",
    "GrpcTls",
    "access_key",
    "describe_exit",
    "find_tritonserver",
    "free_port",
    "model_counters",
    "prepare_backends",
    "server_environment",
    "summarize_log",
]


def temp_log() -> Path:
    """A new file for a server's log, when none is given."""
    handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
    os.close(handle)
    return Path(name)


def precompile(repository: Path) -> None:
    """Write the repository's `__pycache__` before Triton reads it. The stubs (which ignore
    PYTHONDONTWRITEBYTECODE) would write it while loading, and the repository poller would
    take those new files for a change and reload every model once, right after start."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(str(repository), quiet=2, workers=1)


class EmbeddedServer:
    """Run tritonserver on `repository`; a context manager that waits for readiness.

    Ports left None are chosen free. With `api_key`, the model-repository, shared-memory,
    trace and logging APIs answer only requests that carry it: in the `API_KEY_HEADER` header
    over HTTP, in the `GRPC_API_KEY_HEADER` metadata over gRPC (Triton prefixes the key).

    tritonserver ends (SIGTERM) with the thread that started it, so a process killed outright
    leaves no server behind (`tritongen/lifetime.py`): start it from a thread that outlives it."""

    def __init__(
        self,
        repository: str | Path,
        *,
        host: str = LOOPBACK,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_control: bool = False,
        log_path: str | Path | None = None,
        ready_timeout_s: float = 120.0,
        extra_args: tuple[str, ...] = (),
        watchdog: bool = True,
        api_key: str | None = None,
        grpc_tls: GrpcTls | None = None,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.model_control = model_control
        self.log_path = Path(log_path) if log_path else None
        self.ready_timeout_s = ready_timeout_s
        self.extra_args = extra_args
        self.use_watchdog = watchdog
        self.api_key = api_key
        self.grpc_tls = grpc_tls
        self.watchdog: Watchdog | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.max_restarts = max_restarts  # -1: never restart
        # (monotonic time, pid that died, its exit code, pid that replaced it)
        self.restarts: list[tuple[float, int, int, int]] = []
        self.failure: str | None = None  # why the server is down for good
        self.gave_up = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._launch_command: list[str] = []
        self._crashed = False  # the last process was killed by a signal before it was ready
        self._environment: dict[str, str] = {}

    @property
    def http_port(self) -> int:
        return self._port("http")

    @property
    def grpc_port(self) -> int:
        return self._port("grpc")

    @property
    def metrics_port(self) -> int:
        return self._port("metrics")

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self._client_host}:{self.metrics_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("the server is not running")
        return self.process.pid

    def start(self) -> EmbeddedServer:
        """Start tritonserver and return once every model is ready; from then on a thread
        restarts it when it dies (see `_supervise`)."""
        if not self.repository.is_dir():
            raise ServerError(f"{self.repository}: no such model repository; run `tritongen build`")
        nodes = served_nodes(self.repository)
        if nodes:
            raise ServerError(
                f"{self.repository}: holds one repository per node ({', '.join(nodes)}); "
                f"serve {self.repository / NODES_DIR}/<node> on each node"
            )
        install = find_tritonserver()
        self._launch_command = self._command(install, prepare_backends(install))
        self._environment = server_environment(install)
        precompile(self.repository)
        if self.log_path is None:
            self.log_path = temp_log()
        self._stopping.clear()
        self._launch_retrying(self.max_restarts)
        if self.max_restarts >= 0:
            self._supervisor = threading.Thread(
                target=self._supervise, name="tritongen-supervisor", daemon=True
            )
            self._supervisor.start()
        return self

    def _launch_retrying(self, retries: int) -> None:
        """`_launch`, again (at most `retries` more times) while tritonserver is killed by a
        signal before it is ready: Triton 2.51's Python backend can crash while loading models
        (benchmarks/soak_bls.md). A model that fails to load is an error at once."""
        while True:
            self._crashed = False
            try:
                return self._launch()
            except ServerError:
                if not self._crashed or retries <= 0 or self._stopping.is_set():
                    raise
            retries -= 1
            report_crash_while_loading(str(self.log_path))

    def _launch(self) -> None:
        """One tritonserver process, ready, with its watchdog."""
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._launch_command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment,
                preexec_fn=ends_with_this_process(signal.SIGTERM),
            )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise
        if self.use_watchdog:
            self.watchdog = Watchdog(
                self.pid,
                self.http_url,
                self.repository,
                explicit=self.model_control,
                api_key=self.api_key,
            ).start()

    def _supervise(self) -> None:
        """Restart tritonserver whenever it dies without being asked to: Triton 2.51's Python
        backend can crash the whole server under load (benchmarks/soak_bls.md). More than
        `max_restarts` deaths within `RESTART_WINDOW_S` is a crash loop: give up."""
        while True:
            process = self.process
            if process is None:
                return
            code = process.wait()
            remove_busy_flags(process.pid)
            with self._lock:
                if self._stopping.is_set():
                    return
                if self.watchdog is not None:
                    self.watchdog.stop()
                    self.watchdog = None
                now = time.monotonic()
                recent = [t for t, *_ in self.restarts if now - t < RESTART_WINDOW_S]
                if len(recent) >= self.max_restarts:
                    self.failure = (
                        f"tritonserver {describe_exit(code)} and died {len(recent) + 1} times "
                        f"within {RESTART_WINDOW_S / 60:.0f} minutes; not restarting it "
                        f"(see {self.log_path})"
                    )
                    report_given_up(self.failure)
                    self.gave_up.set()
                    return
                try:
                    self._launch_retrying(self.max_restarts - len(recent) - 1)
                except ServerError as exc:
                    self.failure = (
                        f"tritonserver {describe_exit(code)} and did not come back: {exc}"
                    )
                    report_given_up(self.failure)
                    self.gave_up.set()
                    return
                self.restarts.append((now, process.pid, code, self.pid))
                report_restart(
                    process.pid, describe_exit(code), self.pid, len(recent) + 1, RESTART_WINDOW_S
                )

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait for the models to unload, then SIGKILL if it will not go."""
        self._stopping.set()
        with self._lock:
            if self.watchdog is not None:
                self.watchdog.stop()
                self.watchdog = None
            self._terminate(timeout_s)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10)
            self._supervisor = None

    def _terminate(self, timeout_s: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        remove_busy_flags(process.pid)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def is_ready(self) -> bool:
        return server_ready(self.http_url) and metrics_answering(self.metrics_url)

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @property
    def _client_host(self) -> str:
        return LOOPBACK if self.host in ("0.0.0.0", "") else self.host

    def _port(self, name: str) -> int:
        port = self.ports[name]
        if port is None:
            raise ServerError("ports are chosen when the server starts")
        return port

    def _command(self, install: TritonInstall, backends: Path) -> list[str]:
        ports = chosen_ports(self.host, self.ports)
        self.ports.update(ports)
        options = ServerOptions(
            self.host,
            ports,
            self.model_control,
            self.api_key,
            self.grpc_tls,
            self.extra_args,
        )
        return server_command(install.binary, backends, self.repository, options)

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise ServerError("tritonserver was stopped before it was ready")
            if self.process.poll() is not None:
                self._crashed = self.process.returncode < 0  # a signal, not a model's error
                raise ServerError(
                    f"tritonserver {describe_exit(self.process.returncode)} before it was ready: "
                    f"{self._failure()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise ServerError(
            f"tritonserver was not ready after {self.ready_timeout_s:.0f} s: {self._failure()}"
        )

    def _failure(self) -> str:
        """The model's own error from the log, on one line, else the log's last error."""
        return summarize_log(self.log_text()) + f" (full log: {self.log_path})"


_MODEL_ERROR = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] (.*)$", re.MULTILINE)


def model_counters(metrics_url: str) -> dict[tuple[str, str], float]:
    """Triton's per-model counters and totals, (metric, model) -> value, read from the metrics
    endpoint at host:port (nv_inference_count, nv_inference_exec_count, ..._request_success)."""
    try:
        with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as error:
        raise ServerError(
            f"tritonserver's metrics at {metrics_url} did not answer: {error}"
        ) from error
    return {
        (family.name, sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("nv_inference_") and family.type in ("counter", "gauge")
        for sample in family.samples
        if "model" in sample.labels  # the parser names a counter's sample <family>_total
    }


def remove_busy_flags(pid: int) -> None:
    """The files in which the instances of tritonserver `pid`'s groups said they were busy
    (templates/group_model.py), left behind when it was killed."""
    for path in busy_files(pid):
        path.unlink(missing_ok=True)


def describe_exit(code: int) -> str:
    """`was killed by signal 11 (SIGSEGV)` or `exited with code 1`."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def summarize_log(log: str) -> str:
    """The first model's load failure, else the first error line, quoted from the log."""
    for match in _MODEL_ERROR.finditer(log):
        return f"model {match.group(1)} failed to load: {_one_line(match.group(2))}"
    errors = _ERROR_LINE.findall(log)
    if errors:
        return _one_line(errors[0])
    tail = [line for line in log.strip().splitlines() if line.strip()][-1:]
    return _one_line(tail[0]) if tail else "no log output"


def _one_line(text: str) -> str:
    return " ".join(text.replace("\\n", " ").split()).strip('"')[:500]
