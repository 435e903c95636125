"""The command line: every user mistake is exit code 2 and one line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli, spec_data, write_spec

pytestmark = pytest.mark.subprocess


def test_build_writes_repository_and_plan(tmp_path: Path, member_models: list[Path]) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    result = run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--quick")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "repo" / "plan.json").is_file()
    assert (tmp_path / "repo" / "ens" / "config.pbtxt").is_file()


def test_build_plans_from_a_given_profile_without_measuring(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    entries = {str(b): {"throughput": 1000.0 * b, "memory_bytes": 50_000_000} for b in (1, 2, 4, 8)}
    profile = {"version": 1, "members": {p.stem: {"cpu": entries} for p in member_models}}
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    result = run_cli(
        "build",
        str(spec),
        "-o",
        str(tmp_path / "repo"),
        "--profile",
        str(tmp_path / "profile.json"),
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "repo" / "plan.json").read_text())
    assert set(plan["allocation"]) == {p.stem for p in member_models}
    assert plan["predicted_throughput"] > 0


def test_build_with_bad_spec_exits_2_with_one_line(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models)
    data["members"][0]["weight"] = -1
    spec = write_spec(tmp_path, data)
    assert_one_line_error(
        run_cli("build", str(spec), "-o", str(tmp_path / "r")), str(spec), "members.0.weight"
    )
    assert not (tmp_path / "r").exists()


def test_build_with_missing_spec_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("build", str(tmp_path / "none.yaml")), "file not found")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_build_refuses_foreign_folder_and_keeps_it_even_with_force(
    tmp_path: Path, member_models: list[Path], force: list[str]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = run_cli("build", str(spec), "-o", str(tmp_path / "out"), "--quick", *force)
    assert_one_line_error(result, "was not written by tritongen", "choose another -o")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_unknown_option_is_a_usage_error_with_exit_2() -> None:
    assert run_cli("build", "--no-such-flag").returncode == 2


def test_infer_without_server_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("infer", "--model", "x", "--url", "127.0.0.1:9", "--random", "2"), "cannot reach"
    )


def test_serve_missing_repository_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("serve", str(tmp_path / "nowhere")), "no such model repository")


@pytest.mark.parametrize("command", ["build", "serve", "infer", "devices", "profile", "plan"])
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def _profile_file(
    folder: Path, names: list[str], entry: dict | None = None, **extra: object
) -> Path:
    entries = {
        str(b): {"throughput": 1000.0 * b, "memory_bytes": 50_000_000, **(entry or {})}
        for b in (1, 2, 4, 8)
    }
    profile = {"version": 1, "members": {n: {"cpu": entries} for n in names}, **extra}
    path = folder / "profile.json"
    path.write_text(json.dumps(profile))
    return path


def test_build_warns_of_each_assumption_and_plan_json_records_it(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    profile = _profile_file(tmp_path, [p.stem for p in member_models])
    result = run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--profile", str(profile))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    recorded = json.loads((tmp_path / "repo" / "plan.json").read_text())["warnings"]
    assert [f"warning: {w}" for w in recorded] == warnings
    assert any(
        "serving cost not charged (the profile carries no serving_cost)" in w for w in warnings
    )
    assert any("linear: the profile has no one-thread CPU cost" in w for w in warnings)


def test_build_from_a_complete_profile_warns_of_nothing(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    cost = {"per_call_s": 4e-4, "per_sample_s": 1e-6, "per_request_s": 1e-4, "source": "measured"}
    profile = _profile_file(
        tmp_path,
        [p.stem for p in member_models],
        serving_cost=cost,
        entry={"cpu_cost_s_per_sample": 1e-4},
    )
    result = run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--profile", str(profile))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "warnings" not in json.loads((tmp_path / "repo" / "plan.json").read_text())
