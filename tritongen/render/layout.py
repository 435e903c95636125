"""How a plan maps onto served Triton models: their names, their instance groups, and the
largest request they accept."""

from __future__ import annotations

from dataclasses import dataclass

from tritongen.plan.plan import Plan
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble


@dataclass(frozen=True)
class InstanceGroup:
    kind: str
    count: int
    gpus: tuple[int, ...] = ()


def instance_groups(allocation: dict[str, int], inventory: Inventory) -> list[InstanceGroup]:
    """One instance_group per device: `KIND_GPU` pinned with `gpus`, or `KIND_CPU`."""
    groups = []
    for device_id, count in sorted(allocation.items()):
        if count <= 0:
            continue
        device = inventory[device_id]
        if device.kind == "gpu":
            groups.append(InstanceGroup("KIND_GPU", count, (device.gpu_index,)))
        else:
            groups.append(InstanceGroup("KIND_CPU", count))
    return groups


def served_max_batch(ensemble: Ensemble) -> int:
    """The largest request the served ensemble accepts: the spec's, or less where a member's
    ONNX file fixes its batch dimension. The plan's batch sizes go to the batchers, never here."""
    limits = [m.max_batch_limit for m in ensemble.members if m.max_batch_limit]
    return min([ensemble.spec.max_batch_size, *limits])


def combining_group(ensemble: Ensemble, plan: Plan) -> str | None:
    """The group that holds every member, which is then the served ensemble; else None."""
    everyone = {m.name for m in ensemble.members}
    return next((n for n, g in plan.groups.items() if set(g.members) == everyone), None)


def group_model_name(ensemble: Ensemble, plan: Plan, group: str) -> str:
    """The served name of a group: the ensemble's when it combines, else `<ensemble>_<group>`."""
    if combining_group(ensemble, plan) == group:
        return ensemble.spec.name
    return f"{ensemble.spec.name}_{group}"


def group_output(member: str) -> str:
    """The output under which a group that does not combine returns one member's rows."""
    return f"OUT_{member}"


def combine_step_name(ensemble: Ensemble) -> str:
    """The Python model that combines the members' outputs inside Triton's ensemble."""
    return f"{ensemble.spec.name}_combine"
