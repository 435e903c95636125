"""Untrusted files through `tritongen build`: a crafted DEVICES.json index or plan.json node
name never reaches config or a path (the readers: unit/test_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli, spec_data, write_spec
from tests.unit.test_files import CPU, GPU, INJECTED, write_json

pytestmark = pytest.mark.subprocess


def test_index_that_would_inject_config_is_refused_by_build(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    devices = write_json(tmp_path, "DEVICES.json", {"devices": [CPU, {**GPU, "index": INJECTED}]})
    plan = {
        "allocation": {p.stem: {"gpu0": 1} for p in member_models},
        "batch_size": {p.stem: 8 for p in member_models},
        "predicted_throughput": 1.0,
    }
    args = ["--devices", str(devices), "--plan", str(write_json(tmp_path, "plan.json", plan))]
    result = run_cli("build", str(spec), "-o", str(tmp_path / "repo"), "--target", "docker", *args)
    assert_one_line_error(result, "DEVICES.json: devices.1.index")
    assert not (tmp_path / "repo").exists()


def test_crafted_node_name_in_plan_json_never_writes_outside_the_folder(
    tmp_path: Path, member_models: list[Path]
) -> None:
    spec = write_spec(tmp_path, spec_data(member_models))
    names = [p.stem for p in member_models]
    devices = [{**CPU, "id": f"cpu_{n}", "node": n} for n in ("n1", "n2")]
    plan = {
        "allocation": {m: {"cpu_n1" if i else "cpu_n2": 1} for i, m in enumerate(names)},
        "batch_size": dict.fromkeys(names, 8),
        "predicted_throughput": 1.0,
        "nodes": {m: "n1" if i else "../../../escaped" for i, m in enumerate(names)},
        "primary_node": "n1",
    }
    result = run_cli(
        "build", str(spec), "-o", str(tmp_path / "out" / "repo"),
        "--devices", str(write_json(tmp_path, "DEVICES.json", {"devices": devices})),
        "--plan", str(write_json(tmp_path, "plan.json", plan)),
    )  # fmt: skip
    assert_one_line_error(result, "plan.json: nodes.", "'../../../escaped' is not a valid name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out" / "repo").exists()
