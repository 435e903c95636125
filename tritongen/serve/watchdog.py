"""The watchdog: it brings back a model whose Python-backend process died.

Triton 2.51's Python backend does not restart a stub process that was killed (the OOM killer,
a crash in a native library): the model stays loaded and "ready" (`/v2/health/ready` and even
`/v2/models/NAME/ready` answer 200) but fails every request with "Stub process '...' is not
healthy". The watchdog counts each model's live stub processes (children of tritonserver)
and, when one has fewer than it started with, has Triton reload that model:

- by default (`--model-control-mode=poll`, remote load/unload refused) it writes a marker file
  into the model's version folder; Triton's repository poller sees the change and reloads the
  model (a touched config.pbtxt alone is applied in place, without new processes);
- with `serve --model-control` (explicit mode) it writes the marker and asks for the load.

When tritonserver itself dies, the process that runs it (`EmbeddedServer`) starts it again on
the same ports and a new watchdog takes over; `report_restart` says so on the log.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil

from tritongen.serve.health import server_ready

log = logging.getLogger(__name__)

RELOAD_GRACE_S = 30.0  # a reload in progress is not asked for again before this
MARKER = ".tritongen-reload"
STUB = "triton_python_backend_stub"
API_KEY_HEADER = "tritongen-api-key"  # over HTTP; Triton's gRPC prefixes the metadata key:
GRPC_API_KEY_HEADER = f"triton-grpc-protocol-{API_KEY_HEADER}"


class Watchdog:
    """A daemon thread that reloads the models whose stub processes died."""

    def __init__(
        self,
        server_pid: int,
        http_url: str,
        repository: Path,
        *,
        explicit: bool,
        expected: dict[str, int] | None = None,
        interval_s: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.http_url = http_url
        self.repository = repository
        self.explicit = explicit
        self.interval_s = interval_s
        self.api_key = api_key  # sent with the load request when the API is restricted
        # model -> stub processes once the server was ready
        self.expected = Counter(expected) if expected is not None else live_stubs(server_pid)
        self.reloads: list[tuple[float, str]] = []  # (monotonic time, model) of each reload
        self._asked: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritongen-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def check_once(self) -> list[str]:
        """Ask Triton to reload every model with fewer live stubs than at start."""
        now, alive = time.monotonic(), live_stubs(self.server_pid)
        reloaded: list[str] = []
        if all(alive[m] >= n for m, n in self.expected.items()) or not server_ready(
            self.http_url, timeout_s=5
        ):
            return reloaded  # nothing died, or the server is stopping (it unloads everything)
        for model, count in self.expected.items():
            recent = now - self._asked.get(model, -RELOAD_GRACE_S) < RELOAD_GRACE_S
            if alive[model] < count and not recent and self._reload(model):
                self._asked[model] = now
                self.reloads.append((now, model))
                reloaded.append(model)
        return reloaded

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except psutil.NoSuchProcess:  # the server itself is gone
                return
            except Exception:  # the watchdog must outlive any surprise
                log.exception("watchdog check failed")

    def _reload(self, model: str) -> bool:
        log.warning("a Python-backend process of model %s died: reloading the model", model)
        try:
            for version in (self.repository / model).iterdir():
                if version.is_dir() and version.name.isdigit():
                    (version / MARKER).write_text(f"{time.time()}\n")
            if self.explicit:
                url = f"http://{self.http_url}/v2/repository/models/{model}/load"
                headers = {API_KEY_HEADER: self.api_key} if self.api_key else {}
                request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
                with urllib.request.urlopen(request, timeout=120):
                    pass
        except OSError as exc:
            log.error("cannot reload model %s: %s", model, exc)
            return False
        return True


def report_restart(dead_pid: int, how: str, new_pid: int, count: int, window_s: float) -> None:
    """One line for each restart of tritonserver by the process that runs it."""
    log.warning(
        "tritonserver (pid %d) %s; restarted it as pid %d (restart %d in %.0f minutes)",
        dead_pid, how, new_pid, count, window_s / 60,
    )  # fmt: skip


def report_crash_while_loading(log_path: str) -> None:
    log.warning(
        "tritonserver crashed while loading its models (see %s); starting it again", log_path
    )


def report_given_up(reason: str) -> None:
    log.error("%s", reason)


def live_stubs(server_pid: int) -> Counter[str]:
    """Model name -> running (not zombie) Python-backend stub processes of `server_pid`."""
    return Counter(model for model, _ in stub_processes(server_pid))


def stub_processes(server_pid: int) -> list[tuple[str, psutil.Process]]:
    """(model name, process) of each running Python-backend stub of `server_pid`."""
    stubs = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = child.cmdline()
        except psutil.Error:
            continue
        if len(command) > 1 and command[0].endswith(STUB):
            stubs.append((Path(command[1]).parent.parent.name, child))  # MODEL/VERSION/model.py
    return stubs
