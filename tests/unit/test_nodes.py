"""Plans across nodes (no hardware): members stay on one node when they fit, else split; and
the `node` entries of DEVICES.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.synthetic import gpu
from tests.unit.test_planner import assert_valid, entry
from tritongen.errors import PlanError, SpecError
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory, load_inventory

MEMBERS = ["a", "b", "c"]


def on_node(node: str, *indices: int, gb: float = 16.0) -> tuple:
    return tuple(replace(gpu(i, gb), node=node) for i in indices)


def profile_of(gib_per_instance: float) -> Profile:
    per_class = {1: entry(100, gib_per_instance), 8: entry(400, gib_per_instance * 1.2)}
    return Profile({m: {"V100-16GB": per_class} for m in MEMBERS})


def assert_each_member_on_its_node(plan: Plan, inventory: Inventory) -> None:
    assert set(plan.nodes) == set(MEMBERS)
    for member, devices in plan.allocation.items():
        assert {inventory[d].node for d in devices} == {plan.nodes[member]}


def test_members_stay_on_the_fastest_node_when_they_fit_on_one() -> None:
    inventory = Inventory((*on_node("n1", 0), *on_node("n2", 1, 2)))

    plan = make_plan(MEMBERS, inventory, profile_of(3))

    # 3 x 3.6 GiB fit on either node; n2's two GPUs predict more than n1's one.
    assert set(plan.nodes.values()) == {"n2"} and plan.primary_node == "n2"
    assert not plan.spans_nodes
    assert_each_member_on_its_node(plan, inventory)
    assert_valid(plan, inventory, profile_of(3))


def test_members_split_over_nodes_when_no_node_holds_them_all() -> None:
    inventory = Inventory((*on_node("n1", 0), *on_node("n2", 1)))
    profile = profile_of(6)  # two members fit a 16 GiB GPU at batch 1, three do not

    plan = make_plan(MEMBERS, inventory, profile)

    assert plan.spans_nodes
    assert_each_member_on_its_node(plan, inventory)
    assert_valid(plan, inventory, profile)
    two_members = max(plan.node_names, key=list(plan.nodes.values()).count)
    assert plan.primary_node == two_members == plan.node_names[0]
    assert plan.extra["node_throughput"].keys() == {"n1", "n2"}
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).nodes == plan.nodes


def test_split_is_refused_with_one_line_when_no_node_can_take_a_member() -> None:
    inventory = Inventory((*on_node("n1", 0, gb=4), *on_node("n2", 1, gb=4)))

    with pytest.raises(PlanError) as error:
        make_plan(MEMBERS, inventory, profile_of(6))

    message = str(error.value)
    assert message.startswith("a: needs at least 6.0 GiB")
    assert "no node of n1, n2 can take it" in message and "\n" not in message


def test_inventory_without_nodes_gives_a_plan_without_nodes() -> None:
    plan = make_plan(MEMBERS, Inventory((gpu(0),)), profile_of(3))
    assert plan.nodes == {} and "nodes" not in plan.to_json()


# ----------------------------------------------------------------------------- DEVICES.json


def write_devices(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "DEVICES.json"
    path.write_text(json.dumps(data))
    return path


def device(i: int, node: str | None) -> dict:
    entry = {"id": f"cpu{i}", "kind": "cpu", "memory_bytes": 2**30, "cores": 1}
    return entry if node is None else {**entry, "node": node}


def test_node_urls_come_from_devices_json_or_default_to_the_node_name(tmp_path: Path) -> None:
    data = {
        "devices": [device(0, "n1"), device(1, "n2")],
        "nodes": {"n1": {"grpc_url": "127.0.0.1:9001"}},
    }
    inventory = load_inventory(write_devices(tmp_path, data))
    assert inventory.nodes == ["n1", "n2"]
    assert inventory.node_url("n1") == "127.0.0.1:9001"
    assert inventory.node_url("n2") == "n2:8001"
    assert load_inventory(write_devices(tmp_path, inventory.to_json())) == inventory


@pytest.mark.parametrize(
    ("nodes", "fragment"),
    [
        ({"n3": {"grpc_url": "h:1"}}, "nodes.n3: no device has node 'n3'"),
        ({"n1": {"grpc_url": "no port"}}, "nodes.n1.grpc_url: 'no port' is not host:port"),
        ({"n1": {"grpc_url": "h:1", "port": 2}}, "nodes.n1.port: unknown key"),
        ({"n1": "h:1"}, "nodes.n1: expected an object"),
        (["n1"], "nodes: expected an object"),
    ],
)
def test_bad_nodes_entry_is_one_line_naming_it(
    tmp_path: Path, nodes: object, fragment: str
) -> None:
    path = write_devices(tmp_path, {"devices": [device(0, "n1")], "nodes": nodes})
    with pytest.raises(SpecError) as error:
        load_inventory(path)
    assert str(error.value).startswith(f"{path}: {fragment}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("devices", "fragment"),
    [
        ([device(0, "n1"), device(1, None)], "devices.1: has no node while other devices do"),
        ([device(0, "../etc")], "devices.0.node: '../etc' is not a valid name"),
    ],
)
def test_bad_device_node_is_one_line_naming_it(
    tmp_path: Path, devices: list, fragment: str
) -> None:
    path = write_devices(tmp_path, {"devices": devices})
    with pytest.raises(SpecError) as error:
        load_inventory(path)
    assert str(error.value).startswith(f"{path}: {fragment}")
