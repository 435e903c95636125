"""The whole pipeline behind `tritongen build`: spec → members → devices → plan → render."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tritongen.bench.serving_cost import serving_cost
from tritongen.errors import SpecError
from tritongen.plan.plan import Plan, default_plan, fallback_warnings, load_plan
from tritongen.plan.problem import Shape
from tritongen.plan.search import EvaluatorSource, make_plan
from tritongen.profile.profile import Profile, load_profile
from tritongen.profile.profiler import profile_ensemble
from tritongen.render.repository import Combiner, RenderTarget, check_destination, render_repository
from tritongen.spec.devices import Inventory, detect_devices, load_inventory
from tritongen.spec.ensemble import Spec, load_spec
from tritongen.spec.members import Ensemble, load_ensemble


def resolve_inventory(spec: Spec, devices_file: Path | None = None) -> Inventory:
    """`--devices` wins, then the spec's `devices:` path, else this machine."""
    if devices_file is not None:
        return load_inventory(devices_file)
    if spec.devices != "auto":
        path = Path(spec.devices)
        return load_inventory(path if path.is_absolute() else spec.source.parent / path)
    return detect_devices()


@dataclass(frozen=True)
class Planned:
    """Everything `render` needs; `profile` is None when the plan did not come from one."""

    ensemble: Ensemble
    inventory: Inventory
    plan: Plan
    profile: Profile | None = None


def plan_ensemble(
    spec_path: str | Path,
    *,
    devices_file: Path | None = None,
    profile_file: Path | None = None,
    plan_file: Path | None = None,
    quick: bool = False,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
) -> Planned:
    """The plan from `plan_file`, or one CPU instance per member (`quick`), or planned (in
    `shape`) from the profile in `profile_file` or measured now (measurements are cached)."""
    spec = load_spec(spec_path)
    ensemble = load_ensemble(spec)
    inventory = resolve_inventory(spec, devices_file)
    if plan_file is not None:
        return Planned(ensemble, inventory, load_plan(plan_file))
    if quick:
        return Planned(ensemble, inventory, default_plan(ensemble, inventory))
    if profile_file:
        profile = load_profile(profile_file)
    else:
        profile = profile_ensemble(ensemble, inventory, serving=serving_cost(ensemble, inventory))
    plan = plan_from_profile(spec, inventory, profile, shape=shape, max_p99_ms=max_p99_ms)
    return Planned(ensemble, inventory, plan, profile)


def plan_from_profile(
    spec: Spec,
    inventory: Inventory,
    profile: Profile,
    *,
    refine_with: EvaluatorSource | None = None,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
) -> Plan:
    """The planner's plan, carrying what it rests on that was assumed (`plan.json`'s
    `warnings`)."""
    plan = make_plan(
        spec, inventory, profile, refine_with=refine_with, shape=shape, max_p99_ms=max_p99_ms
    )
    return replace(plan, warnings=fallback_warnings(plan, inventory, profile))


def build(
    spec_path: str | Path,
    output: str | Path,
    *,
    combiner: Combiner | None = None,
    target: RenderTarget = RenderTarget.embedded,
    devices_file: Path | None = None,
    profile_file: Path | None = None,
    plan_file: Path | None = None,
    quick: bool = False,
    force: bool = False,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
) -> tuple[Planned, Path]:
    """`tritongen build`: plan (see `plan_ensemble`), then render the repository (one per
    node under `output/nodes/` when the plan spans nodes; `combiner` None: see
    `render_repository`)."""
    check_destination(Path(output).resolve(), force)  # refuse before minutes of profiling
    planned = plan_ensemble(
        spec_path,
        devices_file=devices_file,
        profile_file=profile_file,
        plan_file=plan_file,
        quick=quick,
        shape=shape_for(combiner, shape),
        max_p99_ms=max_p99_ms,
    )
    repository = render_repository(
        planned.ensemble,
        planned.plan,
        planned.inventory,
        output,
        combiner=combiner,
        target=target,
        force=force,
    )
    return planned, repository


def shape_for(combiner: Combiner | None, shape: Shape) -> Shape:
    """The BLS combiner calls members one by one: asked for, it plans them separate."""
    if combiner is None or Combiner(combiner) is not Combiner.bls or shape is Shape.separate:
        return shape
    if shape is Shape.grouped:
        raise SpecError(
            "--shape grouped serves members inside one model, which the BLS combiner cannot "
            "call; use --combiner ensemble, or --shape separate"
        )
    return Shape.separate
