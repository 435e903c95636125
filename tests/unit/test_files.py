"""Files from elsewhere (DEVICES.json, plan.json, profile.json) are untrusted: every field is
checked by type and range when read, a crafted name never becomes a path outside the build's
folder, and CPUs of different models never share profile entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import spec_data, write_spec
from tritongen.errors import PlanError, RenderError, SpecError
from tritongen.plan.plan import Plan, load_plan
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile, ProfileEntry, load_profile
from tritongen.render.repository import render_repository
from tritongen.spec.devices import Device, Inventory, detect_cpu, detect_devices, load_inventory
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

CPU = {"id": "cpu", "kind": "cpu", "class": "cpu", "memory_bytes": 2**33, "cores": 2}
GPU = {"id": "gpu0", "kind": "gpu", "class": "V100-16GB", "memory_bytes": 2**34, "index": 0}
# Parses as protobuf text where the old loader rendered it raw into `gpus: [ … ]`.
INJECTED = '0 ] } , { count: 64 kind: KIND_CPU } ] parameters { key: "x" value: { string_value: "y'


def write_json(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def ensemble(tmp_path: Path, member_models: list[Path]) -> Ensemble:
    return load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))


# ------------------------------------------------------------------------------- DEVICES.json


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"index": INJECTED}, "devices.1.index: Input should be a valid integer"),
        ({"index": "1"}, "devices.1.index: Input should be a valid integer"),
        ({"index": -1}, "devices.1.index: Input should be greater than or equal to 0"),
        ({"index": True}, "devices.1.index: Input should be a valid integer"),
        ({"memory_bytes": "16G"}, "devices.1.memory_bytes: Input should be a valid integer"),
        ({"memory_bytes": 0}, "devices.1.memory_bytes: Input should be greater than 0"),
        ({"cores": 0}, "devices.1.cores: Input should be greater than or equal to 1"),
        ({"kind": "tpu"}, "devices.1.kind: Input should be 'cpu' or 'gpu'"),
        ({"id": "../gpu0"}, "devices.1.id: '../gpu0' is not a valid name"),
        ({"class": 'V100"\n'}, "devices.1.class: String should match pattern"),
        ({"class": "cpu"}, "class 'cpu' names a CPU; this is a GPU"),
        ({"colour": "green"}, "devices.1.colour: unknown key"),
    ],
)
def test_devices_json_field_of_wrong_type_or_range_is_one_line_naming_it(
    tmp_path: Path, change: dict, fragment: str
) -> None:
    path = write_json(tmp_path, "DEVICES.json", {"devices": [CPU, {**GPU, **change}]})
    with pytest.raises(SpecError) as error:
        load_inventory(path)
    assert str(error.value).startswith(f"{path}: ") and fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_devices_json_written_by_the_tool_reads_back_the_same(tmp_path: Path) -> None:
    inventory = detect_devices()
    path = tmp_path / "DEVICES.json"
    inventory.save(path)
    assert load_inventory(path) == inventory


# ---------------------------------------------------------------------------------- plan.json

MINIMAL_PLAN = {
    "allocation": {"a": {"cpu": 2}, "b": {"gpu0": 1}},
    "batch_size": {"a": 8, "b": 32},
    "predicted_throughput": 1234.5,
}


def test_plan_with_only_the_three_required_fields_is_read(tmp_path: Path) -> None:
    plan = load_plan(write_json(tmp_path, "plan.json", MINIMAL_PLAN))
    assert plan.allocation == MINIMAL_PLAN["allocation"]
    assert plan.batch_size == {"a": 8, "b": 32} and plan.predicted_throughput == 1234.5
    assert plan.dynamic_batching and not plan.nodes and not plan.warnings


def test_plan_keys_it_does_not_know_are_kept_through_a_save(tmp_path: Path) -> None:
    later = [{"from": "a later version"}]
    data = {**MINIMAL_PLAN, "later": later, "baseline": {"throughput": 3.0}}
    plan = load_plan(write_json(tmp_path, "plan.json", data))
    plan.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["later"] == later and again["baseline"] == {"throughput": 3.0}


def test_plan_groups_are_read_checked_and_written_back(tmp_path: Path) -> None:
    group = {"members": ["a"], "allocation": {"cpu": 2}, "batch_size": 8, "threads": 1}
    plan = load_plan(write_json(tmp_path, "plan.json", {**MINIMAL_PLAN, "groups": {"cpu": group}}))
    plan.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["groups"] == {"cpu": {**group, "queue_delay_us": 0}}
    bad = {**MINIMAL_PLAN, "groups": {"cpu": {**group, "members": ["../x"]}}}
    with pytest.raises(SpecError, match=r"groups\.cpu\.members\.0: '\.\./x' is not a valid name"):
        load_plan(write_json(tmp_path, "bad.json", bad))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"allocation": {"a": {"cpu": "2 } instance_group {"}}}, "allocation.a.cpu: Input should"),
        ({"allocation": {"a": {"cpu": -1}}}, "allocation.a.cpu: Input should be greater"),
        ({"allocation": {"a/../../x": {"cpu": 1}}}, "is not a valid name"),
        ({"batch_size": {"a": 0}}, "batch_size.a: Input should be greater than or equal to 1"),
        ({"batch_size": {"a": 8.5}}, "batch_size.a: Input should be a valid integer"),
        ({"threads": {"a": "4"}}, "threads.a: Input should be a valid integer"),
        ({"queue_delay_us": {"a": -5}}, "queue_delay_us.a: Input should be greater"),
        ({"dynamic_batching": "no"}, "dynamic_batching: Input should be a valid boolean"),
        ({"predicted_throughput": float("nan")}, "predicted_throughput: Input should be"),
        ({"nodes": {"a": "../../etc"}, "primary_node": "n1"}, "nodes.a: '../../etc' is not"),
        ({"primary_node": "/tmp"}, "primary_node: '/tmp' is not a valid name"),
        ({"allocation": []}, "allocation: expected an object, got list"),
    ],
)
def test_plan_field_of_wrong_type_or_range_is_one_line_naming_it(
    tmp_path: Path, change: dict, fragment: str
) -> None:
    path = write_json(tmp_path, "plan.json", {**MINIMAL_PLAN, **change})
    with pytest.raises(SpecError) as error:
        load_plan(path)
    assert str(error.value).startswith(f"{path}: ") and fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_plan_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    path = write_json(tmp_path, "plan.json", [1, 2])
    with pytest.raises(SpecError, match=r"plan.json: expected an object, got list"):
        load_plan(path)


def test_a_plan_made_in_code_with_a_path_for_a_node_is_refused_by_render(
    tmp_path: Path, ensemble: Ensemble
) -> None:
    """Render resolves every folder it creates: a plan that skipped load_plan's checks
    still cannot make it write outside the destination."""
    escaped = "../../escaped"
    inventory = Inventory(
        tuple(
            Device(f"cpu{i}", "cpu", "cpu", 2**33, cores=1, node=n)
            for i, n in enumerate(["a", escaped])
        )
    )
    names = [m.name for m in ensemble.members]
    plan = Plan(
        allocation={m: {"cpu0" if i else "cpu1": 1} for i, m in enumerate(names)},
        batch_size=dict.fromkeys(names, 8),
        nodes={m: "a" if i else escaped for i, m in enumerate(names)},
        primary_node="a",
    )
    with pytest.raises(RenderError, match=r"'nodes/../../escaped' would be written outside"):
        render_repository(ensemble, plan, inventory, tmp_path / "out" / "repo")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out" / "repo").exists()


# ------------------------------------------------------------------------------- profile.json


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"throughput": "fast", "memory_bytes": 1}, "members.a.cpu.1.throughput"),
        ({"throughput": -3.0, "memory_bytes": 1}, "members.a.cpu.1.throughput"),
        ({"throughput": 3.0, "memory_bytes": 1, "latency_ms": "slow"}, "latency_ms"),
        ({"throughput": 3.0, "memory_bytes": 1, "throughput_by_threads": {"1": 0}}, "by_threads"),
    ],
)
def test_profile_field_of_wrong_type_or_range_is_one_line(
    tmp_path: Path, entry: dict, fragment: str
) -> None:
    path = write_json(tmp_path, "profile.json", {"members": {"a": {"cpu": {"1": entry}}}})
    with pytest.raises(SpecError, match=rf"^{path}: .*{fragment}") as error:
        load_profile(path)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------- CPU classes


def _profile(device_class: str) -> Profile:
    entries = {b: ProfileEntry(100.0 * b, 50_000_000) for b in (1, 8)}
    return Profile({m: {device_class: entries} for m in ("a", "b")})


def _cpu(device_class: str) -> Inventory:
    return Inventory((Device("cpu", "cpu", device_class, 2**33, cores=2),))


def test_the_detected_cpu_class_names_its_model_and_cores() -> None:
    cpu = detect_cpu()
    assert cpu.device_class.startswith("cpu-") and cpu.device_class.endswith(f"-{cpu.cores}c")


def test_profiles_of_different_cpu_models_do_not_mix() -> None:
    with pytest.raises(PlanError, match="the profile covers device classes"):
        make_plan(["a", "b"], _cpu("cpu-Xeon-Gold-6230-2c"), _profile("cpu-EPYC-7B13-2c"))


@pytest.mark.parametrize(
    ("profiled", "planned_for"),
    [
        ("cpu", "cpu-EPYC-7B13-2c"),  # a hand-written profile, a detected inventory
        ("cpu-EPYC-7B13-2c", "cpu"),  # a measured profile, a hand-written DEVICES.json
        ("cpu", "cpu"),
    ],
)
def test_plain_cpu_stands_for_any_cpu(profiled: str, planned_for: str) -> None:
    plan = make_plan(["a", "b"], _cpu(planned_for), _profile(profiled))
    assert plan.allocation["a"]["cpu"] >= 1 and plan.predicted_throughput > 0
