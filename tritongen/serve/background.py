"""`tritongen serve --background`: the server in a detached process of its own.

That process is `tritongen serve` in the foreground: it runs tritonserver, restarts it when it
dies and keeps its watchdog, and it stops everything on SIGTERM. It reports readiness through
a pipe, so that the command that started it can print the ports and return.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tritongen.errors import ServerError

READY_FD_OPTION = "--ready-fd"


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


def _last_error(log_path: Path) -> str | None:
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None
