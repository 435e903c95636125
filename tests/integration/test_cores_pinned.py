"""The cores a process pinned with taskset may use, read in that process."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_a_process_pinned_to_one_core_may_use_one() -> None:
    code = "from tritongen.spec.devices import detect_cpu; print(detect_cpu().cores)"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip

    assert pinned.stdout.strip() == "1"
