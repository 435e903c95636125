"""The serving model checked on a GPU, in one command: the vision ensemble's members served by
torch on KIND_GPU instances of the embedded tritonserver, predicted against served.

    python3 benchmarks/gpu_check.py [--duration-s 1.5] [--budget-s 40] [--out DIR]

On the GPU machine (benchmarks/README.md gives the whole sequence: `benchmarks/gpu_kit.py`
here, `benchmarks/gpu_setup.sh` there). First a preflight, one line per requirement, stopping
(exit 2) at the first that fails, so that a short lease is not spent on a run that cannot
work: NVML lists a GPU, torch sees CUDA, tritonserver and perf_analyzer are installed. Then:
the vision example written as TorchScript members served by torch; the serving cost and the
profile on the GPU and on this machine's CPU (instance curves at every batch on the GPU, the
host CPU each GPU call takes); tritongen's plan; served on the embedded tritonserver beside
naive (one instance per member on the GPU, no batching), batch_only (one instance per member
at its best batch, the paper's baseline) and batch_only with 2 and 4 instances of every
member on the GPU; perf_analyzer at 1, 8, 32 and 64 requests in flight; each served figure
beside the serving model's prediction for that plan. Writes DIR/gpu_check.md and .json (DIR:
$OUT when set, else benchmarks/), each stage's data as soon as it is measured.
`--without-gpu` runs everything on this machine's CPU (to try the script without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import Run, round_figures, summary

from tritongen.bench.compare import batch_only_plan, naive_plan, run_bench
from tritongen.bench.perf import perf_analyzer_binary
from tritongen.bench.serving_cost import measure_profile
from tritongen.errors import TritongenError
from tritongen.examples import vision
from tritongen.plan.plan import Plan
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile
from tritongen.render.repository import Combiner, render_repository
from tritongen.serve.client import EnsembleClient
from tritongen.serve.server import EmbeddedServer, find_tritonserver
from tritongen.spec.devices import Device, Inventory, detect_devices, is_cpu_class
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

LEVELS = [1, 8, 32, 64]
TORCH_ON_GPU = "torch on the GPU (not served)"
# batch_only with this many instances of every member on the GPU; the curves go up to the most
GPU_INSTANCES = (2, 4)


class PreflightFailed(Exception):
    """A requirement of the check is missing on this machine."""


def preflight(inventory: Inventory, need_gpu: bool = True) -> list[str]:
    """One line per requirement met; raises PreflightFailed at the first one missing."""
    gpus = [d for d in inventory.devices if d.kind == "gpu"]
    if need_gpu and not gpus:
        raise PreflightFailed(" ".join(["NVML lists no GPU.", *inventory.warnings]))
    lines = [f"GPU {d.id}: {d.device_class}, {d.memory_bytes / 2**30:.0f} GiB" for d in gpus]
    import torch

    if need_gpu and not torch.cuda.is_available():
        raise PreflightFailed(f"torch {torch.__version__} sees no CUDA device")
    lines.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    try:
        lines.append(f"tritonserver: {find_tritonserver().binary}")
        lines.append(f"perf_analyzer: {perf_analyzer_binary()}")
    except TritongenError as exc:
        raise PreflightFailed(str(exc)) from None
    cpu = next(d for d in inventory.devices if d.kind == "cpu")
    return [*lines, f"CPU: {cpu.device_class}, {cpu.cores} cores"]


def compared_plans(
    ensemble: Ensemble, inventory: Inventory, profile: Profile, device: Device
) -> dict[str, Plan]:
    plans = {
        "naive": naive_plan(ensemble, inventory, device),
        "batch_only": batch_only_plan(ensemble, inventory, profile, device),
    }
    for k in GPU_INSTANCES:
        plans[f"batch_only x{k}"] = batch_only_plan(ensemble, inventory, profile, device, k)
    plans["tritongen"] = make_plan(ensemble.spec, inventory, profile)
    return plans


def curve_lines(profile: dict[str, Any]) -> list[str]:
    """The GPU's instance curves the plan read: samples/s of k instances together per batch."""
    rows = [
        f"| {member} | {device_class} | {batch} | "
        + ", ".join(f"{k}: {curve[k]:.0f}" for k in sorted(curve, key=int))
        + f" | {entry.get('memory_bytes', 0) / 2**20:.0f} | "
        + f"{1e6 * entry.get('host_cpu_s_per_sample', float('nan')):.1f} |"
        for member, by_class in profile["members"].items()
        for device_class, entries in by_class.items()
        if not is_cpu_class(device_class)
        for batch, entry in entries.items()
        if (curve := entry.get("concurrency"))
    ]
    if not rows:
        return ["No GPU entry in the profile (`--without-gpu`).", ""]
    return [
        "## The GPU profile: instance curves at every batch",
        "",
        "| member | device class | batch | k instances together: samples/s | MiB per instance "
        "| host CPU µs per sample |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def plan_lines(plans: dict[str, Plan]) -> list[str]:
    return [
        "## The configurations",
        "",
        *(
            f"- {name}: allocation {plan.allocation}, batch {plan.batch_size}"
            + (f", groups {list(plan.groups)}" if plan.groups else "")
            for name, plan in plans.items()
        ),
        "",
    ]


def served_so_far(out: Path, round_: int, config: str, points: list[Any]) -> None:
    """Each configuration's points as soon as they are served: a run cut short keeps them."""
    line = {"round": round_, "config": config, "points": [p.to_json() for p in points]}
    with (out / "gpu_check_served.jsonl").open("a") as file:
        file.write(json.dumps(line) + "\n")
    print(f"round {round_ + 1} {config}: {[round(p.throughput, 1) for p in points]}", flush=True)


def answers_on_gpu(
    ensemble: Ensemble, inventory: Inventory, device: Device, workdir: Path
) -> dict[str, str]:
    """Per combiner, whether the members on `device` answer as torch in eager mode on the CPU
    (the mean of their softmax outputs): "ok", or what went wrong, in one line; and on a GPU,
    how far torch itself on that GPU is from the CPU's answer."""
    plan = naive_plan(ensemble, inventory, device)
    images = np.random.default_rng(0).random((3, *vision.IMAGE), dtype=np.float32)
    expected = _torch_answer(ensemble, images, "cpu")
    if device.kind == "gpu":
        # The same modules on the GPU in this process (float32, no TF32), called until the
        # TorchScript executor has specialised them as a served instance has: where they part
        # from the CPU, the difference is the GPU's arithmetic, not the serving path's.
        on_gpu = _torch_answer(ensemble, images, f"cuda:{device.index or 0}")
        gap = float(np.abs(on_gpu - expected).max())
        print(f"torch on {device.id} against torch on the CPU: differs by {gap:.3g}", flush=True)
    found = {TORCH_ON_GPU: f"differs by {gap:.3g}"} if device.kind == "gpu" else {}
    for combiner in Combiner:
        repository = workdir / f"smoke-{combiner.value}"
        render_repository(ensemble, plan, inventory, repository, combiner=combiner, force=True)
        try:
            with EmbeddedServer(repository, ready_timeout_s=300) as server:
                got = EnsembleClient(server.http_url, ensemble.spec.name).infer(images)
            error = float(np.abs(got - expected).max())
            found[combiner.value] = "ok" if error < 2e-3 else f"differs by {error:.3g}"
        except Exception as exc:  # the report says what failed; the check goes on
            found[combiner.value] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        print(
            f"answers on {device.id} through the {combiner.value} combiner: {found[combiner.value]}",
            flush=True,
        )
        if found[combiner.value] == "ok":
            break  # the other combiners are tried only when this one fails
    return found


def _torch_answer(ensemble: Ensemble, images: np.ndarray, device: str) -> np.ndarray:
    """The mean of the members' softmax outputs, computed by torch on `device` in float32."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    outputs = []
    with torch.inference_mode():
        for member in ensemble.members:
            module = torch.jit.load(str(member.served_file), map_location=device).eval()
            for _ in range(3):  # the profiling executor optimises after its first calls
                logits = module(torch.from_numpy(images).to(device))
            outputs.append(torch.softmax(logits.float(), -1).cpu().numpy())
    return np.mean(outputs, axis=0)


def save(out: Path, document: dict[str, Any]) -> None:
    (out / "gpu_check.json").write_text(json.dumps(document, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=1.5)
    parser.add_argument("--budget-s", type=float, default=40.0, help="the profile's timed runs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--without-gpu", action="store_true")
    parser.add_argument("--with-cpu", action="store_true", help="profile members on the CPU too")
    parser.add_argument("--configs", default="", help="serve only these (comma-separated)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--max-instances", type=int, default=max(GPU_INSTANCES))
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", Path(__file__).parent))
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run.start(__file__, args)
    inventory = detect_devices()
    try:
        environment = preflight(inventory, need_gpu=not args.without_gpu)
    except PreflightFailed as exc:
        message = f"gpu_check: preflight failed: {exc}"
        run.write(args.out / "gpu_check.md", "GPU check", [message])
        print(message, file=sys.stderr)
        return 2
    print("\n".join(environment), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ensemble = load_ensemble(load_spec(vision.write_example(workdir / "vision", runtime="torch")))
    device = next((d for d in inventory.devices if d.kind == "gpu"), inventory.cpu)
    assert device is not None  # detect_devices always lists the CPU
    answers = answers_on_gpu(ensemble, inventory, device, workdir)
    served = {c: a for c, a in answers.items() if c != TORCH_ON_GPU}
    combiner = next((Combiner(c) for c, a in served.items() if a == "ok"), Combiner.ensemble)
    # Members are profiled where they are compared (the GPU; the CPU with --with-cpu); the
    # CPU stays in the plan's inventory as the host whose cores every call takes.
    profiled = inventory if args.with_cpu else Inventory((device,))
    profile, serving, profile_s = measure_profile(
        ensemble, inventory, use_cache=False, budget_s=args.budget_s, profiled=profiled,
        gpu_instances=args.max_instances,
    )  # fmt: skip
    document: dict[str, Any] = {"environment": environment, "answers": answers}
    document["combiner"], document["profile"] = combiner.value, profile.to_json()
    document["profile_s"], document["serving_cost"] = round(profile_s, 1), serving.describe()
    save(args.out, document)
    plans = compared_plans(ensemble, inventory, profile, device)
    if args.configs:
        plans = {n: p for n, p in plans.items() if n in args.configs.split(",")}
    print("\n".join(plan_lines(plans)), flush=True)
    report = run_bench(
        ensemble, inventory, profile, plans,
        concurrencies=[int(c) for c in args.levels.split(",")],
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds, combiner=combiner,
        on_result=lambda r, config, points: served_so_far(args.out, r, config, points),
    )  # fmt: skip
    document |= report.to_json()
    document["trials"] = round_figures(report)
    save(args.out, document)
    tables = summary({"vision (torch members)": document}, ["Machine: " + "; ".join(environment)])
    answered = [
        f"- {c}: {a}" if c == TORCH_ON_GPU else f"- through the {c} combiner: {a}"
        for c, a in answers.items()
    ]
    body = [
        "Answers of the members on the GPU against torch in eager mode on the CPU (mean softmax "
        f"of 3 images); the configurations below are served through the {combiner.value} "
        "combiner:",
        "",
        *answered,
        "",
        *tables[2:],
        *plan_lines(plans),
        *curve_lines(document["profile"]),
    ]
    run.write(args.out / "gpu_check.md", "GPU check: predicted against served", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
