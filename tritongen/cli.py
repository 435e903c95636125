"""The `tritongen` command: each subcommand parses its arguments, makes one library call and
prints the result. Every `TritongenError` becomes one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from tritongen.errors import TritongenError

if TYPE_CHECKING:
    from tritongen.devices import Inventory
    from tritongen.planner import Evaluator
    from tritongen.profile import Profile
    from tritongen.spec import Spec

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

SpecArg = Annotated[Path, typer.Argument(help="The ensemble spec (YAML).")]


@app.callback()
def _root() -> None:
    """Profile, plan, render and serve an ensemble of DNNs on Triton Inference Server."""


DevicesOpt = Annotated[
    Path | None, typer.Option("--devices", help="DEVICES.json to plan for (default: detect).")
]


@app.command()
def devices(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the inventory to this DEVICES.json.")
    ] = None,
) -> None:
    """Show the CPU and GPUs of this machine."""
    from tritongen.devices import detect_devices
    from tritongen.report import inventory_table

    inventory = detect_devices()
    console.print(inventory_table(inventory))
    if json_out:
        inventory.save(json_out)
        console.print(f"wrote {json_out}")


@app.command()
def profile(
    spec: SpecArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write profile.json.")
    ] = Path("profile.json"),
    devices_file: DevicesOpt = None,
) -> None:
    """Measure each member's throughput and memory per device class and batch size."""
    raise TritongenError("profile: not implemented yet")


@app.command()
def plan(
    spec: SpecArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write plan.json.")
    ] = Path("plan.json"),
    devices_file: DevicesOpt = None,
    profile_file: Annotated[
        Path | None,
        typer.Option("--profile", help="profile.json to plan from (default: measure)."),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option("--measure", help="Re-rank the best candidates by serving and measuring."),
    ] = False,
) -> None:
    """Decide how many instances of each member go on which device, at which batch size."""
    from tritongen.planner import make_plan
    from tritongen.report import plan_table
    from tritongen.spec import load_spec

    ensemble_spec = load_spec(spec)
    inventory = _inventory(devices_file, ensemble_spec)
    refine = _measured_evaluator(ensemble_spec, inventory) if measure else None
    if profile_file is not None:
        member_profile = _load_profile(profile_file)
    else:
        member_profile = _measure_profile(ensemble_spec, inventory)
    result = make_plan(ensemble_spec, inventory, member_profile, refine_with=refine)
    result.save(output)
    console.print(plan_table(result, inventory, member_profile))
    console.print(f"wrote {output}")


def _inventory(devices_file: Path | None, spec: Spec) -> Inventory:
    """--devices, else the spec's `devices:` file, else this machine's devices."""
    from tritongen.devices import detect_devices, load_inventory

    if devices_file is not None:
        return load_inventory(devices_file)
    if spec.devices != "auto":
        return load_inventory(spec.source.parent / spec.devices)
    return detect_devices()


def _load_profile(path: Path) -> Profile:
    from tritongen.profile import load_profile

    return load_profile(path)


def _measure_profile(spec: Spec, inventory: Inventory) -> Profile:
    """Profile the members on these devices (opens the model files)."""
    import tritongen.profile

    # Looked up at run time: the profiler is written alongside the planner.
    profile_ensemble = getattr(tritongen.profile, "profile_ensemble", None)
    if profile_ensemble is None:
        raise TritongenError(
            "profiling is not available in this build yet; pass --profile profile.json"
        )
    from tritongen.models import load_ensemble

    profiled: Profile = profile_ensemble(load_ensemble(spec), inventory)
    return profiled


def _measured_evaluator(spec: Spec, inventory: Inventory) -> Evaluator:
    """The evaluator that serves a candidate and runs perf_analyzer (not wired yet)."""
    raise TritongenError("plan --measure needs a running embedded server: not available yet")


def main() -> None:
    try:
        app(standalone_mode=True)
    except TritongenError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
