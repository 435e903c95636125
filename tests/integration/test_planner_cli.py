"""`tritongen plan` as a user runs it: its one-line errors (the planner itself:
unit/test_planner.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.unit.test_planner import write_inputs
from tests.unit.test_serving_model import cpu, cpu_profile

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


def _plan_with_budget(tmp_path: Path, max_p99_ms: str) -> subprocess.CompletedProcess[str]:
    """`tritongen plan` of the two-member inputs under a p99 budget, into tmp_path/plan.json."""
    spec, devices, profile = write_inputs(tmp_path)
    return run_cli(
        "plan", str(spec), "--devices", str(devices), "--profile", str(profile),
        "--max-p99-ms", max_p99_ms, "-o", str(tmp_path / "plan.json"),
    )  # fmt: skip


def test_cli_plan_with_a_latency_budget_no_plan_meets_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    result = _plan_with_budget(tmp_path, "0.001")

    assert_one_line_error(result, "no plan of resnet50, vgg16 meets a p99 latency of 0.001 ms")
    assert not (tmp_path / "plan.json").exists()


def test_cli_plan_for_other_hardware_shows_its_budget_was_predicted_not_served(
    tmp_path: Path,
) -> None:
    # planned from a profile and devices given: nothing here can serve it to check the budget
    result = _plan_with_budget(tmp_path, "100000")

    assert result.returncode == 0, result.stderr
    assert "p99 budget" in result.stdout and "not checked by serving" in result.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["max_p99_ms"] == 100000 and "budget_check" not in plan


def test_cli_plan_runs_a_groups_members_in_parallel_only_when_asked(tmp_path: Path) -> None:
    # Three 5 ms members grouped on 4 cores: in parallel a lone request waits ~5 ms, not 15.
    costs = {"a": 0.005, "b": 0.005, "c": 0.005}
    spec = tmp_path / "ensemble.yaml"
    spec.write_text(
        "name: trio\nmembers:\n"
        + "".join(f"  - name: {n}\n    model: missing/{n}.onnx\n" for n in costs)
    )
    devices = tmp_path / "DEVICES.json"
    cpu(cores=4).save(devices)
    profile = tmp_path / "profile.json"
    cpu_profile(costs).save(profile)

    def planned(*flags: str) -> dict[str, object]:
        out = tmp_path / f"plan{len(flags)}.json"
        args = ("--devices", str(devices), "--profile", str(profile), "--shape", "grouped")
        result = run_cli("plan", str(spec), *args, "-o", str(out), *flags)
        assert result.returncode == 0, result.stderr
        (group,) = json.loads(out.read_text())["groups"].values()
        return group

    assert not planned().get("parallel_members")
    assert planned("--parallel-members")["parallel_members"] is True
