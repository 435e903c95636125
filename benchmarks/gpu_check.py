"""The serving model checked on a GPU: the vision ensemble profiled, planned, served on KIND_GPU
instances and measured, on a machine with an NVIDIA GPU, in one command.

    .venv/bin/python benchmarks/gpu_check.py [--duration-s 2.0] [--out DIR]

First a preflight, one line per requirement, stopping (exit 2) at the first that fails so that
a short lease on a GPU machine is not spent on a run that cannot work: NVML lists a GPU,
onnxruntime has the CUDA execution provider (`pip install 'tritongen[gpu]'`), tritonserver and
perf_analyzer are installed. Then what `benchmarks/prediction.py` does, for the vision ensemble
on every device this machine has: the profile (with k instances side by side on the GPU), the
plan, naive / batch_only / tritongen's plan / the plan of the other shape served on the
embedded tritonserver, perf_analyzer at 1, 8, 32 and 64 requests in flight, and each served
throughput beside the serving model's prediction. Writes DIR/gpu_check.md and
DIR/gpu_check.json (DIR: $OUT when set, else benchmarks/), the preflight's lines included
when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import measure_example, summary

from tritongen.bench.perf import perf_analyzer_binary
from tritongen.errors import TritongenError
from tritongen.serve.server import find_tritonserver
from tritongen.spec.devices import Inventory, detect_devices, is_cpu_class

EXAMPLE = "vision"


class PreflightFailed(Exception):
    """A requirement of the check is missing on this machine."""


def preflight(inventory: Inventory, need_gpu: bool = True) -> list[str]:
    """One line per requirement met; raises PreflightFailed at the first one missing."""
    gpus = [d for d in inventory.devices if d.kind == "gpu"]
    if need_gpu and not gpus:
        raise PreflightFailed(" ".join(["NVML lists no GPU.", *inventory.warnings]))
    lines = [f"GPU {d.id}: {d.device_class}, {d.memory_bytes / 2**30:.0f} GiB" for d in gpus]
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if need_gpu and "CUDAExecutionProvider" not in providers:
        raise PreflightFailed(
            f"onnxruntime {ort.__version__} has no CUDA execution provider ({', '.join(providers)})"
            ": pip install 'tritongen[gpu]'"
        )
    lines.append(f"onnxruntime {ort.__version__}: {', '.join(providers)}")
    try:
        lines.append(f"tritonserver: {find_tritonserver().binary}")
        lines.append(f"perf_analyzer: {perf_analyzer_binary()}")
    except TritongenError as exc:
        raise PreflightFailed(str(exc)) from None
    cpu = next(d for d in inventory.devices if d.kind == "cpu")
    return [*lines, f"CPU: {cpu.device_class}, {cpu.cores} cores"]


def gpu_lines(document: dict[str, Any]) -> list[str]:
    """Where tritongen's plan put instances, and the GPU's k-instances curves it read."""
    plan = document["plans"]["tritongen"]
    rows = [
        f"| {member} | {device_class} | {batch} | "
        + ", ".join(f"{k}: {curve[k]:.0f}" for k in sorted(curve, key=int))
        + " |"
        for member, by_class in document["profile"]["members"].items()
        for device_class, entries in by_class.items()
        if not is_cpu_class(device_class)
        for batch, entry in entries.items()
        if (curve := entry.get("concurrency"))
    ]
    header = "| member | device class | batch | k instances side by side: samples/s |"
    table = [header, "|---|---|---|---|", *rows]
    return [
        "## tritongen's plan and the GPU profile",
        "",
        f"allocation {plan['allocation']}, groups {plan.get('groups', {})}",
        "",
        *(table if rows else ["No GPU entry in the profile (`--without-gpu`)."]),
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--without-gpu", action="store_true", help="try the script on a machine without a GPU"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", Path(__file__).parent))
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inventory = detect_devices()
    try:
        environment = preflight(inventory, need_gpu=not args.without_gpu)
    except PreflightFailed as exc:
        message = f"gpu_check: preflight failed: {exc}"
        (args.out / "gpu_check.md").write_text(f"# GPU check\n\n{message}\n")
        print(message, file=sys.stderr)
        return 2
    print("\n".join(environment), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    document = measure_example(EXAMPLE, workdir, args)
    header = [
        "Machine: " + "; ".join(environment) + f"; {time.perf_counter() - started:.0f} s in all.",
        f"Command: `.venv/bin/python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`.",
        "",
    ]
    lines = summary({EXAMPLE: document}, header) + gpu_lines(document)
    lines[0] = "# GPU check: predicted against served throughput"
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
