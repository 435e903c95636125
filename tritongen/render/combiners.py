"""The model that combines the members' outputs: Triton's ensemble scheduler with its combine
step, or the BLS combiner that calls each member (also on other servers); which one a build
gets and what each can serve."""

from __future__ import annotations

from enum import Enum
from typing import Any

from tritongen.errors import SpecError
from tritongen.plan.plan import Plan
from tritongen.render.context import RenderContext
from tritongen.render.layout import (
    combine_step_name,
    combining_group,
    group_model_name,
    group_output,
    served_max_batch,
)
from tritongen.spec.ensemble import TlsFiles
from tritongen.spec.members import Ensemble

COMBINER_INSTANCES = 2  # an async BLS instance moves one batch at a time: keep two in flight


class Combiner(str, Enum):
    ensemble = "ensemble"
    bls = "bls"


def choose_combiner(ensemble: Ensemble, plan: Plan, asked: Combiner | None) -> Combiner:
    """The combiner asked for; by default BLS when a member is served elsewhere."""
    if asked is not None:
        return Combiner(asked)
    remote = ensemble.spec.remote_urls or plan.spans_nodes
    return Combiner.bls if remote else Combiner.ensemble


def check_combiner(ensemble: Ensemble, plan: Plan, combiner: Combiner) -> None:
    """`combiner` can serve this plan's members where they are, and no member takes the name
    of the combine step."""
    if combiner is Combiner.bls:
        _check_bls_groups(ensemble, plan)
    else:
        _check_all_served_here(ensemble, plan)
    if combine_step_name(ensemble) in {m.name for m in ensemble.members}:
        raise SpecError(f"member name {combine_step_name(ensemble)!r} is reserved; rename it")


def _check_all_served_here(ensemble: Ensemble, plan: Plan) -> None:
    """Triton's ensemble scheduler calls only models of its own server."""
    remote = ensemble.spec.remote_urls
    if remote:
        name = next(iter(remote))
        raise SpecError(
            f"{ensemble.spec.source}: member {name} has a url (served elsewhere); only the BLS "
            "combiner can call it there: build with --combiner bls"
        )
    if plan.spans_nodes:
        name, node = next((m, n) for m, n in plan.nodes.items() if n != plan.primary_node)
        raise SpecError(
            f"plan: member {name} is on node {node}, not on the combiner's node "
            f"{plan.primary_node}; only the BLS combiner calls members on other nodes: "
            "build with --combiner bls or leave --combiner out"
        )


def _check_bls_groups(ensemble: Ensemble, plan: Plan) -> None:
    """The BLS combiner calls members one by one: it cannot call co-located members."""
    if not plan.groups:
        return
    shape = "every member in one model" if combining_group(ensemble, plan) else "grouped members"
    raise SpecError(
        f"plan: serves {shape} (groups: {', '.join(plan.groups)}); the BLS combiner needs "
        "members served alone: plan with --shape separate, or leave out --combiner bls"
    )


def write_bls(ctx: RenderContext) -> None:
    ensemble = ctx.ensemble
    spec = ensemble.spec
    _check_remote_inputs(ensemble)
    members = [
        {
            "name": m.name,
            "inputs": dict(m.input_map),  # member input -> combined input
            "input": m.inputs[0].name,  # a remote member's one input (remote.py)
            "output": m.output.name,
            "weight": m.weight,
            "max_batch_size": served_max_batch(ensemble),
            **({"url": spec.remote_urls[m.name]} if m.name in spec.remote_urls else {}),
            **({"tls": _tls_files(spec.remote_tls[m.name])} if m.name in spec.remote_tls else {}),
        }
        for m in ensemble.members
    ]
    config = ctx.render(
        "combiner_bls.pbtxt.j2",
        name=spec.name,
        inputs=ensemble.inputs,
        output=ensemble.output,
        max_batch_size=spec.max_batch_size,
        instances=COMBINER_INSTANCES,
        queue_delay_us=0,
        members=members,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        min_members=spec.min_members or len(members),
        member_timeout_ms=spec.member_timeout_ms or 0,
    )
    version = ctx.model_dir(spec.name, config)
    files = {
        "combiner_bls.py": "model.py",
        "batching.py": "batching.py",
        "combine.py": "combine.py",
    }
    if spec.remote_urls:
        files["remote.py"] = "remote.py"
    ctx.copy_templates(version, files)


def _check_remote_inputs(ensemble: Ensemble) -> None:
    """The call to a member on another server (templates/remote.py) sends one tensor."""
    for member in ensemble.members:
        if member.name in ensemble.spec.remote_urls and len(member.inputs) > 1:
            raise SpecError(
                f"{ensemble.spec.source}: member {member.name} takes {len(member.inputs)} "
                "inputs and is served on another server; members with several inputs must be "
                "served beside the combiner for now (give no url, or plan for one node)"
            )


def _tls_files(tls: TlsFiles) -> dict[str, str]:
    """tritonclient's TLS options (file paths), as the combiner passes them."""
    return {key: str(path) for key, path in tls.model_dump().items() if path is not None}


def write_native_ensemble(ctx: RenderContext) -> None:
    ensemble = ctx.ensemble
    spec = ensemble.spec
    step = combine_step_name(ensemble)
    common = {
        "name": spec.name,
        "combine_step": step,
        "members": ensemble.members,
        "inputs": ensemble.inputs,
        "steps": _ensemble_steps(ensemble, ctx.plan),
        "output": ensemble.output,
        "max_batch_size": served_max_batch(ensemble),
    }
    ctx.model_dir(spec.name, ctx.render("ensemble.pbtxt.j2", **common))
    config = ctx.render(
        "combine_step.pbtxt.j2",
        **common,
        instances=ctx.plan.combine_instances,
        queue_delay_us=0,
        weights=spec.weights,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        # zeros: the step only combines; Triton needs every dim known to make them
        warmup_batches=sorted({1, served_max_batch(ensemble)})
        if ctx.warmup and _static_outputs(ensemble)
        else [],
    )
    version = ctx.model_dir(step, config)
    ctx.copy_templates(
        version,
        {"combine_step.py": "model.py", "batching.py": "batching.py", "combine.py": "combine.py"},
    )


def _static_outputs(ensemble: Ensemble) -> bool:
    return all(d > 0 for m in ensemble.members for d in m.output.dims)


def _ensemble_steps(ensemble: Ensemble, plan: Plan) -> list[dict[str, Any]]:
    """The scheduler's member steps: one per member served alone, one per group (mapping each
    of its members' outputs); `member_<i>` is member i's output, in spec order."""
    index = {m.name: i for i, m in enumerate(ensemble.members)}
    steps = [
        {
            "model": m.name,
            "inputs": dict(m.input_map),
            "outputs": {m.output.name: f"member_{index[m.name]}"},
        }
        for m in ensemble.members
        if plan.group_of(m.name) is None
    ]
    served_inputs = {i.name: i.name for i in ensemble.inputs}
    for name, group in plan.groups.items():
        outputs = {group_output(m): f"member_{index[m]}" for m in group.members}
        model = group_model_name(ensemble, plan, name)
        steps.append({"model": model, "inputs": served_inputs, "outputs": outputs})
    return steps
