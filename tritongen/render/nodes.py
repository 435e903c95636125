"""The multi-node split: one repository per node of a plan, `DIR/nodes/<node>/`.

Each is served by its own tritonserver. The primary node's holds the (BLS) combiner and its
own members and calls the others at their node's gRPC url; the others hold their members
alone. They cannot sit beside the primary's models at the top of DIR: Triton takes every
folder of a repository for a model and refuses to start on one that is not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tritongen.plan.plan import Plan
from tritongen.render.combiners import Combiner
from tritongen.render.context import RenderContext
from tritongen.render.destination import inside, read_marker
from tritongen.render.member import write_member
from tritongen.render.models import write_models
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble

NODES_DIR = "nodes"  # DIR/nodes/<node>/: one repository per node of a multi-node plan


def write_nodes(ctx: RenderContext) -> None:
    """`nodes/<primary>/`: the BLS combiner and the primary's members, calling the others at
    their node's url; `nodes/<other>/`: that node's members alone."""
    ensemble, plan = ctx.ensemble, ctx.plan
    for node in plan.node_names:
        folder = inside(ctx.root, NODES_DIR, node)
        folder.mkdir(parents=True)
        if node == plan.primary_node:
            calling = calling_other_nodes(ensemble, plan, ctx.inventory)
            write_models(ctx.moved(folder, calling), Combiner.bls)
            continue
        for member in ensemble.members:
            if plan.nodes[member.name] == node and member.name not in ensemble.spec.remote_urls:
                write_member(ctx.moved(folder), member)


def calling_other_nodes(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> Ensemble:
    """`ensemble` as the primary node sees it: members on other nodes get their node's url
    and TLS files (a `url` the spec gives already wins)."""
    members = [
        m
        if m.url or plan.nodes[m.name] == plan.primary_node
        else m.model_copy(
            update={
                "url": inventory.node_url(plan.nodes[m.name]),
                "tls": inventory.node_tls.get(plan.nodes[m.name]),
            }
        )
        for m in ensemble.spec.members
    ]
    return replace(ensemble, spec=ensemble.spec.model_copy(update={"members": members}))


def served_nodes(repository: Path) -> list[str]:
    """The nodes of a multi-node build (`DIR/nodes/<node>/`); empty for one repository."""
    nodes = (read_marker(repository) or {}).get("nodes")
    return [str(n) for n in nodes] if isinstance(nodes, list) else []


def node_lines(plan: Plan, inventory: Inventory, repository: Path) -> list[str]:
    """Where each node's repository is and at which gRPC url the combiner expects it."""
    if not plan.spans_nodes:
        return []
    lines = []
    for node in plan.node_names:
        members = ", ".join(m for m, n in plan.nodes.items() if n == node)
        folder = repository / NODES_DIR / node
        if node == plan.primary_node:
            lines.append(f"  node {node} (combiner, {members}): serve {folder}; clients call it")
        else:
            url = inventory.node_url(node)
            lines.append(f"  node {node} ({members}): serve {folder} with gRPC at {url}")
    return lines
