"""The fast tier's rule, enforced: a test here starts no child process (no tritonserver, no
CLI, no profiling child, no perf_analyzer). One that does belongs in tests/integration, marked
`server` or `subprocess`."""

from __future__ import annotations

import multiprocessing.process
import subprocess
from collections.abc import Iterator

import pytest


class ChildProcessInUnitTest(AssertionError):
    pass


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise ChildProcessInUnitTest(
        "a unit test started a child process: move it to tests/integration and mark it "
        "`server` or `subprocess`"
    )


@pytest.fixture(autouse=True)
def _no_child_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse)
    yield
