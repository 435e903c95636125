"""Plans across nodes: which node serves each member when DEVICES.json gives devices a `node`.

A call to a member on another node costs a gRPC hop (about 4 ms at p50 on loopback,
`benchmarks/cross_node_hop.md`) that the base model does not price, so the rule is plain:

1. If the whole ensemble fits on one node, it stays there: each node is planned alone and the
   one with the best predicted throughput wins (ties: the first in DEVICES.json). No hop.
2. Otherwise every member gets one node, by the planner's worst-fit over all the devices
   (largest member first, onto the device with the most free memory): the member goes to that
   device's node. Each node's members are then planned (worst-fit and greedy search) on that
   node's devices alone, so all of a member's instances live on one node.

Members on different nodes share no device, so the ensemble's predicted throughput is the
least of the nodes'; the base LP over the merged allocation gives exactly that. The combiner
runs on the primary node: the one with the most members (ties: the first in DEVICES.json).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tritongen.errors import PlanError
from tritongen.plan.base_model import base_solution, upper_bound
from tritongen.plan.placement import best_batch, worst_fit
from tritongen.plan.plan import Plan
from tritongen.plan.problem import Shape, build_problem
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory

# Plans `members` on the devices of one node (the planner's worst-fit and greedy search), in
# the shape given (None: the one asked for).
PlanOnDevices = Callable[[Sequence[str], Inventory, Shape | None], Plan]


def plan_across_nodes(
    members: Sequence[str],
    inventory: Inventory,
    profile: Profile,
    plan_on_devices: PlanOnDevices,
    max_batch_size: int | None = None,
) -> Plan:
    """The plan on one node when the ensemble fits one, else members split over nodes."""
    whole = best_single_node(members, inventory, plan_on_devices)
    if whole is not None:
        return whole
    assignment = assign_members(members, inventory, profile, max_batch_size)
    plans = {
        # Members on other nodes are called one by one (the BLS combiner): no groups.
        node: plan_on_devices(
            [m for m in members if assignment[m] == node], inventory.on_node(node), Shape.separate
        )
        for node in inventory.nodes
        if node in assignment.values()
    }
    return merge_node_plans(members, plans, assignment, inventory, profile)


def best_single_node(
    members: Sequence[str], inventory: Inventory, plan_on_devices: PlanOnDevices
) -> Plan | None:
    """The best plan that keeps every member on one node; None when no node can hold them."""
    best: Plan | None = None
    for node in inventory.nodes:
        try:
            plan = plan_on_devices(members, inventory.on_node(node), None)
        except PlanError:  # does not fit there (or the profile does not cover its devices)
            continue
        if best is None or plan.predicted_throughput > best.predicted_throughput:
            best = replace(plan, nodes=dict.fromkeys(members, node), primary_node=node)
    return best


def assign_members(
    members: Sequence[str],
    inventory: Inventory,
    profile: Profile,
    max_batch_size: int | None = None,
) -> dict[str, str]:
    """Member -> node: the node of the device worst-fit places the member on."""
    problem = build_problem(members, inventory, profile, max_batch_size)
    try:
        start = worst_fit(problem, best_batch(problem))
    except PlanError as exc:
        raise PlanError(
            f"{exc} (no node of {', '.join(inventory.nodes)} can take it: "
            "add a node, or more memory to one)"
        ) from None
    return {
        member: str(problem.devices[int(np.flatnonzero(start.counts[m])[0])].node)
        for m, member in enumerate(problem.members)
    }


def primary_node(assignment: Mapping[str, str], inventory: Inventory) -> str:
    """The node with the most members; ties go to the first in DEVICES.json."""
    counts = Counter(assignment.values())
    return max(inventory.nodes, key=lambda node: counts[node])


def merge_node_plans(
    members: Sequence[str],
    plans: Mapping[str, Plan],
    assignment: dict[str, str],
    inventory: Inventory,
    profile: Profile,
) -> Plan:
    """One plan from the nodes' plans: their members' entries and groups; the ensemble runs at
    the pace of its slowest node."""

    def union(field: str) -> dict[str, Any]:
        merged = {k: v for plan in plans.values() for k, v in getattr(plan, field).items()}
        return {m: merged[m] for m in members if m in merged}

    allocation, batch_size = union("allocation"), union("batch_size")
    base_lp, bottleneck = base_solution(allocation, batch_size, inventory, profile)
    slowest = min(plans.values(), key=lambda p: p.predicted_throughput)
    return Plan(
        allocation=allocation,
        batch_size=batch_size,
        predicted_throughput=slowest.predicted_throughput,
        threads=union("threads"),
        queue_delay_us=union("queue_delay_us"),
        nodes={m: assignment[m] for m in members},
        primary_node=primary_node(assignment, inventory),
        groups={name: g for plan in plans.values() for name, g in plan.groups.items()},
        extra={
            "model": "serving",
            "base_lp_throughput": base_lp,
            "bottleneck": slowest.extra.get("bottleneck", bottleneck),
            "bound": upper_bound(members, inventory, profile),
            "node_throughput": {n: p.predicted_throughput for n, p in plans.items()},
        },
    )
