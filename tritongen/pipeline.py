"""The whole pipeline behind `tritongen build`: spec → members → devices → plan → render."""

from __future__ import annotations

from pathlib import Path

from tritongen.devices import Inventory, detect_devices, load_inventory
from tritongen.models import Ensemble, load_ensemble
from tritongen.plan import Plan, default_plan, load_plan
from tritongen.profile import Profile, load_profile
from tritongen.render import Combiner, Target, render_repository
from tritongen.spec import Spec, load_spec


def resolve_inventory(spec: Spec, devices_file: Path | None = None) -> Inventory:
    """`--devices` wins, then the spec's `devices:` path, else this machine."""
    if devices_file is not None:
        return load_inventory(devices_file)
    if spec.devices != "auto":
        path = Path(spec.devices)
        return load_inventory(path if path.is_absolute() else spec.source.parent / path)
    return detect_devices()


def build(
    spec_path: str | Path,
    output: str | Path,
    *,
    combiner: Combiner = Combiner.ensemble,
    target: Target = Target.embedded,
    devices_file: Path | None = None,
    plan_file: Path | None = None,
    force: bool = False,
) -> tuple[Ensemble, Plan, Path]:
    spec = load_spec(spec_path)
    ensemble = load_ensemble(spec)
    inventory = resolve_inventory(spec, devices_file)
    plan = load_plan(plan_file) if plan_file else default_plan(ensemble, inventory)
    repository = render_repository(
        ensemble, plan, inventory, output, combiner=combiner, target=target, force=force
    )
    return ensemble, plan, repository


def plan_for(
    spec_path: str | Path, devices_file: Path | None = None, profile_file: Path | None = None
) -> tuple[Ensemble, Inventory, Profile, Plan]:
    """Everything up to the plan: the profile from `profile_file` or measured (cached)."""
    from tritongen.planner import make_plan
    from tritongen.profile import profile_ensemble

    spec = load_spec(spec_path)
    ensemble = load_ensemble(spec)
    inventory = resolve_inventory(spec, devices_file)
    profile = load_profile(profile_file) if profile_file else profile_ensemble(ensemble, inventory)
    return ensemble, inventory, profile, make_plan(spec, inventory, profile)
