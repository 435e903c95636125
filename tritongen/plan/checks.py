"""Checking a plan against the spec and the device inventory before anything is served: every
member placed on known devices, groups that hold members of the spec once each, and a
multi-node plan whose members sit on their node's devices. A mismatch is a `PlanError`."""

from __future__ import annotations

from tritongen.errors import PlanError
from tritongen.plan.plan import Plan
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble


def check_plan(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """Raise a one-line `PlanError` where `plan` does not fit `ensemble` on `inventory`."""
    _check_members(ensemble, plan, inventory)
    _check_groups(ensemble, plan, inventory)
    _check_nodes(ensemble, plan, inventory)


def _check_members(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """Each member served here has an instance, a batch size, and devices of the inventory."""
    for member in ensemble.members:
        if member.name in ensemble.spec.remote_urls:
            continue  # placed by the server at its url
        if not any(n > 0 for n in plan.allocation.get(member.name, {}).values()):
            raise PlanError(f"plan: member {member.name} has no instance; re-run `tritongen plan`")
        if member.name not in plan.batch_size:
            raise PlanError(f"plan: member {member.name} has no batch size")
        for device_id in plan.allocation[member.name]:
            try:
                inventory[device_id]
            except KeyError:
                raise PlanError(
                    f"plan: member {member.name} is placed on {device_id!r}, "
                    "which is not in the device inventory"
                ) from None


def _check_groups(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """Each grouped member is a member of the spec, in one group only, served here."""
    names = {m.name for m in ensemble.members}
    seen: set[str] = set()
    for name, group in plan.groups.items():
        for member in group.members:
            if member not in names or member in seen or member in ensemble.spec.remote_urls:
                raise PlanError(
                    f"plan: group {name} lists {member!r}, which is not a member served here "
                    "or is in another group too; re-run `tritongen plan`"
                )
            seen.add(member)
        if not any(n > 0 for n in group.allocation.values()) or group.batch_size < 1:
            raise PlanError(f"plan: group {name} has no instance or no batch size")
        unknown = [d for d in group.allocation if d not in {x.id for x in inventory.devices}]
        if unknown:
            raise PlanError(f"plan: group {name} is placed on {unknown[0]!r}, not in the inventory")


def _check_nodes(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """A multi-node plan names a node for every member, holds each member's instances on
    its node's devices, and serves the combiner on one of its nodes."""
    if not plan.spans_nodes:
        return
    if plan.primary_node not in plan.nodes.values():
        raise PlanError(
            f"plan: primary_node {plan.primary_node!r} serves no member; "
            f"use one of {plan.node_names}"
        )
    for member in ensemble.members:
        node = plan.nodes.get(member.name)
        if node is None:
            raise PlanError(f"plan: member {member.name} has no node; re-run `tritongen plan`")
        for device_id in plan.allocation.get(member.name, {}):
            if inventory[device_id].node != node:
                raise PlanError(
                    f"plan: member {member.name} is on node {node} but placed on {device_id} "
                    f"of node {inventory[device_id].node}; re-run `tritongen plan`"
                )
