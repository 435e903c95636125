"""The models of one repository: the members served here alone, the groups, and the
combiner (none when one group holds every member: that group combines)."""

from __future__ import annotations

from tritongen.render.combiners import Combiner, write_bls, write_native_ensemble
from tritongen.render.context import RenderContext
from tritongen.render.group import write_group
from tritongen.render.layout import combining_group
from tritongen.render.member import write_member


def write_models(ctx: RenderContext, combiner: Combiner) -> None:
    ensemble, plan = ctx.ensemble, ctx.plan
    remote = ensemble.spec.remote_urls
    for member in ensemble.members:
        if member.name not in remote and plan.group_of(member.name) is None:
            write_member(ctx, member)
    for name in plan.groups:
        write_group(ctx, name)
    if combining_group(ensemble, plan) is not None:
        return
    if combiner is Combiner.bls:
        write_bls(ctx)
    else:
        write_native_ensemble(ctx)
