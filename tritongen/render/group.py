"""The model of a group: one Python-backend model running several members on every batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritongen.plan.plan import Plan
from tritongen.render.context import RenderContext
from tritongen.render.layout import (
    group_model_name,
    group_output,
    instance_groups,
    served_max_batch,
)
from tritongen.render.model_files import (
    WARMUP_DIR,
    copy_model,
    served_file_name,
    write_warmup_data,
)
from tritongen.spec.members import MemberModel

# The files in which a group's instances say which of them is executing (BusyInstances in
# templates/group_model.py, handed this as its `busy_file` parameter):
# `<BUSY_FILE>-<tritonserver pid>-<model>`, removed by the server that started them.
BUSY_FILE = Path("/dev/shm") / "tritongen-busy"


def busy_files(pid: int) -> list[Path]:
    """The busy files of the groups that tritonserver `pid` runs."""
    return list(BUSY_FILE.parent.glob(f"{BUSY_FILE.name}-{pid}-*"))


def write_group(ctx: RenderContext, name: str) -> None:
    """One Python-backend model running `plan.groups[name]`'s members on every batch: it takes
    the ensemble's inputs and returns the combined output (it holds every member) or each
    member's output under `group_output`."""
    ensemble, plan = ctx.ensemble, ctx.plan
    group = plan.groups[name]
    members = [m for m in ensemble.members if m.name in group.members]
    combines = len(members) == len(ensemble.members)
    model_name = group_model_name(ensemble, plan, name)
    spec = ensemble.spec
    config = ctx.render(
        "group.pbtxt.j2",
        ensemble_name=spec.name,
        name=model_name,
        combines=combines,
        members=[_group_member(m, plan) for m in members],
        inputs=ensemble.inputs,
        output=ensemble.output,
        max_batch_size=served_max_batch(ensemble),
        instance_groups=instance_groups(group.allocation, ctx.inventory),
        preferred_batch_sizes=[group.batch_size] if group.batch_size > 1 else [],
        queue_delay_us=group.queue_delay_us,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        threads=group.threads,
        parallel_members=group.parallel_members,
        warmup_batches=sorted({1, group.batch_size}) if ctx.warmup else [],
        busy_file=str(BUSY_FILE),
    )
    version = ctx.model_dir(model_name, config)
    for member in members:
        copy_model(member, version / member.name)
    if ctx.warmup:
        samples = ensemble.sample_inputs(1)
        write_warmup_data(
            [samples[i.name][0] for i in ensemble.inputs], ctx.root / model_name / WARMUP_DIR
        )
    ctx.copy_templates(
        version,
        {
            "group_model.py": "model.py",
            "batching.py": "batching.py",
            "combine.py": "combine.py",
            "sessions.py": "sessions.py",
        },
    )


def _group_member(member: MemberModel, plan: Plan) -> dict[str, Any]:
    """What the group's model.py needs of one member (its `members` parameter)."""
    return {
        "name": member.name,
        "file": f"{member.name}/{served_file_name(member)}",
        "runtime": member.runtime,
        "output_index": member.output_index,
        # member input -> the group's (combined) input, in the order the member takes them
        "inputs": dict(member.input_map),
        "output": member.output.name,
        "served_as": group_output(member.name),
        "batch_size": plan.batch_size[member.name],
        "weight": member.weight,
        "triton_type": member.output.triton_type,
        "dims": list(member.output.dims),
    }
