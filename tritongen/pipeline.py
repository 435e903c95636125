"""The pipeline behind `tritongen plan` and `build`: spec → members → devices → profile → plan
(refined by serving candidates with `plan --measure`) → render."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from tritongen.bench.budget import Planner, plan_checked
from tritongen.bench.compare import BenchReport, ServedMeasurer, bench_plans, run_bench
from tritongen.bench.perf import PerfPoint
from tritongen.bench.serving_cost import ServingCost, serving_cost
from tritongen.errors import ServerError, SpecError
from tritongen.plan.plan import Plan, default_plan, fallback_warnings, load_plan
from tritongen.plan.problem import Problem, Shape
from tritongen.plan.search import EvaluatorSource, PlanEvaluator, latency_budget, make_plan
from tritongen.profile.profile import Profile, load_profile
from tritongen.profile.profiler import profile_ensemble
from tritongen.render.repository import Combiner, RenderTarget, check_destination, render_repository
from tritongen.serve.install import find_tritonserver
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


def profile_members(
    spec_path: str | Path,
    *,
    devices_file: Path | None = None,
    batch_sizes: Sequence[int] | None = None,
    budget_s: float | None = None,
    use_cache: bool = True,
    status: Callable[[str], AbstractContextManager[object]] = nullcontext,
) -> tuple[Profile, ServingCost]:
    """`tritongen profile`: what a served call costs here (shown under `status`), then each
    member's throughput and memory per device class and batch size."""
    spec = load_spec(spec_path)
    ensemble = load_ensemble(spec)
    inventory = resolve_inventory(spec, devices_file)
    with status("measuring what a served call costs on the embedded server"):
        serving = serving_cost(ensemble, inventory, use_cache=use_cache)
    profile = profile_ensemble(
        ensemble,
        inventory,
        batch_sizes=batch_sizes,
        budget_s=budget_s,
        use_cache=use_cache,
        serving=serving,
    )
    return profile, serving


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
    measure: bool = False,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
    parallel_members: bool = False,
) -> Planned:
    """The plan from `plan_file`, or one CPU instance per member (`quick`), or planned (in
    `shape`) from the profile in `profile_file` or measured now (measurements are cached);
    `measure` re-ranks the best candidates by serving and measuring each."""
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
    refine_with = measured_evaluator(ensemble, inventory, profile, max_p99_ms) if measure else None

    def plan_under(budget_ms: float | None, in_shape: Shape = shape) -> Plan:
        return plan_from_profile(
            spec,
            inventory,
            profile,
            refine_with=refine_with,
            shape=in_shape,
            max_p99_ms=budget_ms,
            parallel_members=parallel_members,
        )

    budget_ms = latency_budget(spec, max_p99_ms)
    here = profile_file is None and devices_file is None and spec.devices == "auto"
    if budget_ms is None or not here or inventory.nodes:
        return Planned(ensemble, inventory, plan_under(max_p99_ms), profile)
    # the shape asked for; where the planner may choose, each shape's best after it
    shapes = [shape, *((Shape.grouped, Shape.separate) if shape is Shape.auto else ())]
    planners = [partial(plan_under, in_shape=s) for s in shapes]
    plan = checked_plan(planners, ensemble, inventory, budget_ms)
    return Planned(ensemble, inventory, plan, profile)


def checked_plan(
    planners: Sequence[Planner], ensemble: Ensemble, inventory: Inventory, budget_ms: float
) -> Plan:
    """The plan under a p99 budget, checked by serving it here (`bench.budget`); the first
    planner's, unchecked and saying so, where the embedded server cannot run."""
    try:
        find_tritonserver()
    except ServerError as exc:
        plan = planners[0](budget_ms)
        return replace(plan, warnings=(*plan.warnings, f"p99 budget not checked by serving: {exc}"))
    return plan_checked(planners, ensemble, inventory, budget_ms)


def plan_for_command(
    spec_path: str | Path,
    *,
    devices_file: Path | None = None,
    profile_file: Path | None = None,
    measure: bool = False,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
    parallel_members: bool = False,
) -> tuple[Plan, Inventory, Profile]:
    """`tritongen plan`: the plan with the inventory and profile it was made from. From a
    given profile, and without `measure`, it opens no model file: a plan for hardware this
    machine may not have."""
    if profile_file is not None and not measure:
        spec = load_spec(spec_path)
        inventory, profile = resolve_inventory(spec, devices_file), load_profile(profile_file)
        plan = plan_from_profile(
            spec,
            inventory,
            profile,
            shape=shape,
            max_p99_ms=max_p99_ms,
            parallel_members=parallel_members,
        )
        return plan, inventory, profile
    planned = plan_ensemble(
        spec_path,
        devices_file=devices_file,
        profile_file=profile_file,
        measure=measure,
        shape=shape,
        max_p99_ms=max_p99_ms,
        parallel_members=parallel_members,
    )
    assert planned.profile is not None  # plan_ensemble profiles unless given a plan
    return planned.plan, planned.inventory, planned.profile


def measured_evaluator(
    ensemble: Ensemble, inventory: Inventory, profile: Profile, max_p99_ms: float | None
) -> EvaluatorSource:
    """Serve each shortlisted candidate on the embedded server; perf_analyzer measures it."""
    workdir = Path(tempfile.mkdtemp(prefix="tritongen-plan-"))
    measurer = ServedMeasurer(ensemble, inventory, workdir, max_p99_ms=max_p99_ms)
    cost = profile.serving_cost

    def evaluator(problem: Problem) -> PlanEvaluator:
        return PlanEvaluator(problem, measurer, cost)

    return evaluator


def plan_from_profile(
    spec: Spec,
    inventory: Inventory,
    profile: Profile,
    *,
    refine_with: EvaluatorSource | None = None,
    shape: Shape = Shape.auto,
    max_p99_ms: float | None = None,
    parallel_members: bool = False,
) -> Plan:
    """The planner's plan, carrying what it rests on that was assumed (`plan.json`'s
    `warnings`); `parallel_members`: a group may run its members in parallel threads."""
    plan = make_plan(
        spec,
        inventory,
        profile,
        refine_with=refine_with,
        shape=shape,
        max_p99_ms=max_p99_ms,
        parallel_members=parallel_members,
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
    parallel_members: bool = False,
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
        shape=shape_for(combiner, shape, target),
        max_p99_ms=max_p99_ms,
        parallel_members=parallel_members,
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


def shape_for(
    combiner: Combiner | None, shape: Shape, target: RenderTarget = RenderTarget.embedded
) -> Shape:
    """The BLS combiner calls members one by one, and the NGC image (`--target docker`) runs
    members on its native onnxruntime backend, while a group is a Python-backend model that
    needs onnxruntime inside the image's Python: either plans the members separate."""
    if RenderTarget(target) is RenderTarget.docker and shape is not Shape.separate:
        if shape is Shape.grouped:
            raise SpecError(
                "--shape grouped serves members inside one Python-backend model, which the NGC "
                "image (--target docker) cannot run without onnxruntime; use --shape separate"
            )
        return Shape.separate
    if combiner is None or Combiner(combiner) is not Combiner.bls or shape is Shape.separate:
        return shape
    if shape is Shape.grouped:
        raise SpecError(
            "--shape grouped serves members inside one model, which the BLS combiner cannot "
            "call; use --combiner ensemble, or --shape separate"
        )
    return Shape.separate


def bench_ensemble(
    spec_path: str | Path,
    *,
    devices_file: Path | None = None,
    profile_file: Path | None = None,
    shape: Shape = Shape.auto,
    combiner: Combiner = Combiner.ensemble,
    concurrencies: Sequence[int] = (1, 4, 16, 64),
    interval_ms: int = 3000,
    rounds: int = 2,
    on_result: Callable[[int, str, list[PerfPoint]], None] | None = None,
) -> tuple[Planned, BenchReport]:
    """`tritongen bench`: naive, batch_only and tritongen's plan served and measured in one
    run, against the bound."""
    planned = plan_ensemble(
        spec_path,
        devices_file=devices_file,
        profile_file=profile_file,
        shape=shape_for(combiner, shape),
    )
    ensemble, inventory, profile = planned.ensemble, planned.inventory, planned.profile
    assert profile is not None  # plan_ensemble profiles unless given a plan
    report = run_bench(
        ensemble,
        inventory,
        profile,
        bench_plans(ensemble, inventory, profile, planned.plan),
        concurrencies=concurrencies,
        interval_ms=interval_ms,
        rounds=rounds,
        combiner=combiner,
        on_result=on_result,
    )
    return planned, report
