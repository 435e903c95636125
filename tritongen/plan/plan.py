"""The plan: how many instances of each member go on which device, at which batch size.

This module holds the `Plan` value and its file format (`plan.json`). The search that fills it
(worst-fit placement, then greedy) lives in `tritongen.plan.search`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from tritongen.errors import SpecError
from tritongen.files import read_json, validate
from tritongen.profile.profile import Profile
from tritongen.spec.devices import Inventory
from tritongen.spec.ensemble import Name
from tritongen.spec.members import Ensemble


@dataclass(frozen=True)
class Group:
    """Members served inside one Python-backend model: one process per instance, one dynamic
    batcher, the members' ONNX sessions run one after another on each batch (in parallel
    threads when `parallel_members`). A group that holds every member also combines their outputs
    and is served as the ensemble itself."""

    members: tuple[str, ...]
    allocation: dict[str, int]  # device id -> instances of the whole group
    batch_size: int  # the batcher's preferred batch
    threads: int = 1  # intra-op threads of each member's session
    queue_delay_us: int = 0
    parallel_members: bool = False  # each batch runs through the members in parallel threads

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "allocation": self.allocation,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "queue_delay_us": self.queue_delay_us,
            **({"parallel_members": True} if self.parallel_members else {}),
        }


@dataclass(frozen=True)
class Plan:
    allocation: dict[str, dict[str, int]]  # member -> device id -> instances
    batch_size: dict[str, int]  # member -> max_batch_size shared by all its instances
    predicted_throughput: float = 0.0
    threads: dict[str, int] = field(default_factory=dict)  # member -> intra-op threads (CPU)
    queue_delay_us: dict[str, int] = field(default_factory=dict)  # member -> batcher delay
    dynamic_batching: bool = True  # False renders no batcher: one request per execution
    # Multi-node plans only (DEVICES.json gives nodes): member -> node, and the node that
    # serves the combiner. Empty and None otherwise.
    nodes: dict[str, str] = field(default_factory=dict)
    primary_node: str | None = None
    # Co-located members (group name -> Group). A grouped member's `allocation`, `batch_size`
    # and `threads` repeat its group's, so that readers of those fields keep working.
    groups: dict[str, Group] = field(default_factory=dict)
    # Instances of the combine step (Triton's ensemble scheduler's last step): each serves one
    # call at a time, so a fast ensemble needs more than one
    combine_instances: int = 1
    # What was assumed because something could not be measured (one line each)
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # baseline, bottleneck, model name...

    def group_of(self, member: str) -> str | None:
        """The name of the group that serves `member`, None when it is served alone."""
        return next((name for name, g in self.groups.items() if member in g.members), None)

    @property
    def node_names(self) -> list[str]:
        """The nodes that hold members, the primary first."""
        used = dict.fromkeys(self.nodes.values())
        return sorted(used, key=lambda n: n != self.primary_node)

    @property
    def spans_nodes(self) -> bool:
        return len(set(self.nodes.values())) > 1

    def to_json(self) -> dict[str, Any]:
        nodes = {"nodes": self.nodes, "primary_node": self.primary_node} if self.nodes else {}
        return {
            "allocation": self.allocation,
            "batch_size": self.batch_size,
            "predicted_throughput": self.predicted_throughput,
            "threads": self.threads,
            "queue_delay_us": self.queue_delay_us,
            "dynamic_batching": self.dynamic_batching,
            **nodes,
            **({"groups": {n: g.to_json() for n, g in self.groups.items()}} if self.groups else {}),
            "combine_instances": self.combine_instances,
            **({"warnings": list(self.warnings)} if self.warnings else {}),
            **self.extra,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: Any, source: Path = Path("plan.json")) -> Plan:
        """A plan from a plan.json document, checked by type and range (`SpecError` naming
        `source` otherwise). Keys it does not know are kept in `extra`."""
        checked = validate(_PlanFile, data, source)
        known = set(_PlanFile.model_fields)
        return cls(
            allocation=checked.allocation,
            batch_size=checked.batch_size,
            predicted_throughput=checked.predicted_throughput,
            threads=checked.threads,
            queue_delay_us=checked.queue_delay_us,
            dynamic_batching=checked.dynamic_batching,
            nodes=checked.nodes,
            primary_node=checked.primary_node,
            warnings=tuple(checked.warnings),
            combine_instances=checked.combine_instances,
            groups={
                name: Group(
                    members=tuple(g.members),
                    allocation=g.allocation,
                    batch_size=g.batch_size,
                    threads=g.threads,
                    queue_delay_us=g.queue_delay_us,
                    parallel_members=g.parallel_members,
                )
                for name, g in checked.groups.items()
            },
            extra={k: v for k, v in data.items() if k not in known},
        )


Count = Annotated[int, Field(strict=True, ge=0, le=4096)]
Batch = Annotated[int, Field(strict=True, ge=1, le=4096)]


class _GroupFile(BaseModel):
    """One group of plan.json's `groups`."""

    model_config = ConfigDict(extra="forbid")

    members: list[Name] = Field(min_length=1)
    allocation: dict[Name, Count]  # device id -> instances of the group
    batch_size: Batch
    threads: Annotated[int, Field(strict=True, ge=1, le=1024)] = 1
    queue_delay_us: Annotated[int, Field(strict=True, ge=0, le=10**7)] = 0
    # `side_by_side` is the name plans written before 0.2 gave it.
    parallel_members: Annotated[
        bool, Field(strict=True, validation_alias=AliasChoices("parallel_members", "side_by_side"))
    ] = False


class _PlanFile(BaseModel):
    """plan.json. `allocation` and `batch_size` are required (and `predicted_throughput`
    written); other tools and later versions add keys of their own, which are kept as they
    are."""

    model_config = ConfigDict(extra="allow")

    allocation: dict[Name, dict[Name, Count]]  # member -> device id -> instances
    batch_size: dict[Name, Batch]
    predicted_throughput: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = 0.0
    threads: dict[Name, Annotated[int, Field(strict=True, ge=1, le=1024)]] = {}
    queue_delay_us: dict[Name, Annotated[int, Field(strict=True, ge=0, le=10**7)]] = {}
    dynamic_batching: Annotated[bool, Field(strict=True)] = True
    nodes: dict[Name, Name] = {}  # member -> node
    primary_node: Name | None = None
    warnings: list[Annotated[str, Field(max_length=2000)]] = []
    groups: dict[Name, _GroupFile] = {}
    combine_instances: Annotated[int, Field(strict=True, ge=1, le=64)] = 1


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    return Plan.from_json(read_json(path, "create it with `tritongen plan`"), path)


def fallback_warnings(plan: Plan, inventory: Inventory, profile: Profile) -> tuple[str, ...]:
    """What `plan` rests on that was assumed rather than measured, one line each: the
    inventory's and the profiler's assumptions, and for members on a CPU a serving cost or
    a one-thread CPU cost that the profile lacks."""
    lines = [*inventory.warnings, *profile.notes]
    cpu = inventory.cpu
    on_cpu = [m for m, by_device in plan.allocation.items() if cpu and by_device.get(cpu.id)]
    if cpu is not None and on_cpu:
        lines += [w for w in [profile.serving_cost.warning()] if w]
        for member in on_cpu:
            entry = profile.entries(member, cpu.device_class).get(plan.batch_size[member])
            one_thread = entry and (
                "cpu_cost_s_per_sample" in entry.extra
                or "1" in entry.extra.get("throughput_by_threads", {})
            )
            if entry and not one_thread:
                lines.append(
                    f"{member}: the profile has no one-thread CPU cost at batch "
                    f"{plan.batch_size[member]}; assumed its throughput scales perfectly "
                    f"with {cpu.cores or 1} cores"
                )
    return tuple(dict.fromkeys(lines))


def default_plan(ensemble: Ensemble, inventory: Inventory) -> Plan:
    """One instance of each member on the CPU, dynamic batching up to the spec's batch size."""
    cpu = inventory.cpu
    if cpu is None:
        raise SpecError("the device inventory has no CPU; add one to DEVICES.json")
    members = ensemble.members
    threads = even_threads(cpu.cores, len(members))
    return Plan(
        allocation={m.name: {cpu.id: 1} for m in members},
        batch_size={
            m.name: _batch_size(ensemble.spec.max_batch_size, m.max_batch_limit) for m in members
        },
        threads={m.name: threads for m in members},
    )


def even_threads(cores: int | None, instances: int) -> int:
    """Intra-op threads per instance when `instances` share `cores` evenly (at least one), so
    that concurrent instances do not oversubscribe the CPU."""
    return max(1, (cores or 1) // max(1, instances))


def _batch_size(wanted: int, limit: int | None) -> int:
    return min(wanted, limit) if limit else wanted
