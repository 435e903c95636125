"""The `tritongen` command: each subcommand parses its arguments, makes one library call and
prints the result. Every `TritongenError` becomes one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tritongen.errors import TritongenError

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
) -> None:
    """Decide how many instances of each member go on which device, at which batch size."""
    raise TritongenError("plan: not implemented yet")


def main() -> None:
    try:
        app(standalone_mode=True)
    except TritongenError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
