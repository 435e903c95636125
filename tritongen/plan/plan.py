"""The plan: how many instances of each member go on which device, at which batch size.

This module holds the `Plan` value and its file format (`plan.json`). The search that fills it
(worst-fit placement, then greedy) lives in `tritongen.plan.search`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritongen.errors import SpecError
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble


@dataclass(frozen=True)
class Group:
    """Members served inside one Python-backend model: one process per instance, one dynamic
    batcher, the members' ONNX sessions run one after another on each batch. A group that
    holds every member also combines their outputs and is served as the ensemble itself."""

    members: tuple[str, ...]
    allocation: dict[str, int]  # device id -> instances of the whole group
    batch_size: int  # the batcher's preferred batch
    threads: int = 1  # intra-op threads of each member's session
    queue_delay_us: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "allocation": self.allocation,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "queue_delay_us": self.queue_delay_us,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Group:
        return cls(
            members=tuple(str(m) for m in data["members"]),
            allocation={str(d): int(n) for d, n in data["allocation"].items()},
            batch_size=int(data["batch_size"]),
            threads=int(data.get("threads", 1)),
            queue_delay_us=int(data.get("queue_delay_us", 0)),
        )


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
            **self.extra,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        known = {
            "allocation",
            "batch_size",
            "predicted_throughput",
            "threads",
            "queue_delay_us",
            "dynamic_batching",
            "nodes",
            "primary_node",
            "groups",
        }
        return cls(
            allocation={
                m: {d: int(n) for d, n in a.items()} for m, a in data["allocation"].items()
            },
            batch_size={m: int(b) for m, b in data["batch_size"].items()},
            predicted_throughput=float(data.get("predicted_throughput", 0.0)),
            threads={m: int(t) for m, t in data.get("threads", {}).items()},
            queue_delay_us={m: int(t) for m, t in data.get("queue_delay_us", {}).items()},
            dynamic_batching=bool(data.get("dynamic_batching", True)),
            nodes={m: str(n) for m, n in data.get("nodes", {}).items()},
            primary_node=data.get("primary_node"),
            groups={str(n): Group.from_json(g) for n, g in data.get("groups", {}).items()},
            extra={k: v for k, v in data.items() if k not in known},
        )


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found; create it with `tritongen plan`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(f"{path}: not a valid plan.json ({type(exc).__name__}: {exc})") from None


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
