"""Render a Triton model repository from an ensemble and its plan: the checks, then every
model written into a staging folder that takes the destination's place.

The modules beside this one each own one concern: `destination` (where it is written and the
swap), `combiners`, `member` and `group` (one writer per kind of model, sharing one
`RenderContext`), `nodes` (one repository per node), `layout` (the served names) and
`templating` (Jinja and config.pbtxt). The render stage's public names are importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritongen.errors import RenderError
from tritongen.plan.checks import check_plan
from tritongen.plan.plan import Plan
from tritongen.render.combiners import Combiner, check_combiner, choose_combiner
from tritongen.render.context import RenderContext, RenderTarget
from tritongen.render.destination import (
    MARKER,
    check_destination,
    read_marker,
    restrict_permissions,
    staged,
    write_marker,
)
from tritongen.render.layout import (
    combine_step_name,
    combining_group,
    group_model_name,
    group_output,
    instance_groups,
    served_max_batch,
)
from tritongen.render.member import TRT_CACHE_DIR
from tritongen.render.models import write_models
from tritongen.render.nodes import NODES_DIR, calling_other_nodes, served_nodes, write_nodes
from tritongen.render.templating import environment, parse_config, pbtxt_string, templates_dir
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble

__all__ = [
    "MARKER",
    "NODES_DIR",
    "TRT_CACHE_DIR",
    "Combiner",
    "RenderTarget",
    "calling_other_nodes",
    "check_destination",
    "choose_combiner",
    "combine_step_name",
    "combining_group",
    "group_model_name",
    "group_output",
    "instance_groups",
    "parse_config",
    "pbtxt_string",
    "read_marker",
    "render_repository",
    "served_max_batch",
    "served_nodes",
    "templates_dir",
]


def render_repository(
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    destination: str | Path,
    *,
    combiner: Combiner | None = None,
    target: RenderTarget = RenderTarget.embedded,
    force: bool = False,
    warmup: bool = True,
) -> Path:
    """Write the repository for `ensemble` laid out by `plan` into `destination`.

    `combiner` None chooses: BLS when some member is served elsewhere (a spec `url`, or
    another node of the plan), else Triton's ensemble. `warmup` gives every member a
    `model_warmup` at its planned batch sizes, run before the server reports ready (off only
    to measure what it saves)."""
    destination = Path(destination).resolve()
    check_destination(destination, force)
    chosen = choose_combiner(ensemble, plan, combiner)
    check_combiner(ensemble, plan, chosen)
    check_plan(ensemble, plan, inventory)
    _check_runtimes(ensemble, RenderTarget(target), bool(plan.groups))
    with staged(destination) as staging:
        ctx = RenderContext(
            staging, environment(), ensemble, plan, inventory, RenderTarget(target), warmup
        )
        _write_all(ctx, chosen)
    return destination


def _check_runtimes(ensemble: Ensemble, target: RenderTarget, plan_groups: bool) -> None:
    """The NGC image runs members on its native onnxruntime backend, and its Python has no
    onnxruntime: no group there, and no member whose ONNX export was not checked against
    torch (runtime: torch)."""
    if target is RenderTarget.docker and plan_groups:
        raise RenderError(
            "the plan serves members in a group, a Python-backend model that needs onnxruntime "
            "inside the NGC image's Python (--target docker); plan with --shape separate"
        )
    by_torch = [m.name for m in ensemble.members if m.torchscript is not None]
    if target is RenderTarget.docker and by_torch:
        raise RenderError(
            f"members {', '.join(by_torch)} are served by torch (runtime: torch), which "
            "--target docker does not render; drop `runtime: torch` from them for that target"
        )


def _write_all(ctx: RenderContext, combiner: Combiner) -> None:
    """Every model, the plan, and the marker that says tritongen wrote the folder."""
    plan = ctx.plan
    marker: dict[str, Any] = {
        "ensemble": ctx.ensemble.spec.name,
        "combiner": combiner.value,
        "target": ctx.target.value,
    }
    if plan.spans_nodes:
        write_nodes(ctx)
        marker |= {"nodes": plan.node_names, "primary_node": plan.primary_node}
    else:
        write_models(ctx, combiner)
    plan.save(ctx.root / "plan.json")
    write_marker(ctx.root, marker)
    restrict_permissions(ctx.root)
