"""`tritongen plan` as a user runs it: its one-line errors (the planner itself:
unit/test_planner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.unit.test_planner import write_inputs

pytestmark = pytest.mark.subprocess


def test_cli_plan_exits_2_naming_a_member_that_fits_no_device(tmp_path: Path) -> None:
    spec, devices, profile = write_inputs(tmp_path, giant=True)

    result = run_cli("plan", str(spec), "--devices", str(devices), "--profile", str(profile))

    assert result.returncode == 2
    assert result.stderr.startswith("error: giant: needs at least 99.0 GiB")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_plan_measure_needs_the_model_files_and_says_which(tmp_path: Path) -> None:
    spec, devices, profile = write_inputs(tmp_path)

    result = run_cli(
        "plan", str(spec), "--devices", str(devices), "--profile", str(profile), "--measure"
    )

    assert result.returncode == 2
    assert "resnet50.onnx not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_plan_with_a_latency_budget_no_plan_meets_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    spec, devices, profile = write_inputs(tmp_path)

    result = run_cli(
        "plan", str(spec), "--devices", str(devices), "--profile", str(profile),
        "--max-p99-ms", "0.001", "-o", str(tmp_path / "plan.json"),
    )  # fmt: skip

    assert_one_line_error(result, "no plan of resnet50, vgg16 meets a p99 latency of 0.001 ms")
    assert not (tmp_path / "plan.json").exists()
