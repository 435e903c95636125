"""benchmarks/gpu_check.py on a machine without a GPU: what of it can run here is its preflight,
which must stop a lease-bound run at once, in one line, and leave the reason in its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tritongen.spec.devices import detect_devices

pytestmark = pytest.mark.subprocess


def test_without_a_gpu_the_check_stops_at_its_preflight_in_one_line(tmp_path: Path) -> None:
    if any(d.kind == "gpu" for d in detect_devices().devices):
        pytest.skip("this machine has a GPU: the check would run in full")
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("gpu_check: preflight failed: NVML lists no GPU.")
    assert "NVML lists no GPU" in (tmp_path / "gpu_check.md").read_text()
    assert not (tmp_path / "gpu_check.json").exists()
