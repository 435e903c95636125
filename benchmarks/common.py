"""The benchmark harness: what every script under benchmarks/ shares, and the only module they
import from one another. It owns a report's provenance header (date, commit, machine, load
before and after, versions), the spread of a figure over trials (mean ± standard deviation),
writing a report, and the profiled examples and predicted-against-served tables that the
served comparisons start from.

A script starts a `Run` before it measures anything and ends with `run.write(...)`:

    run = Run.start(__file__, args)
    ...
    run.write(OUT / "name.md", "Title", body_lines, data=document)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tritongen.bench.compare import BenchReport, bench_plans, run_bench
from tritongen.bench.serving_cost import measure_profile
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile, ServingCost
from tritongen.render.repository import group_model_name
from tritongen.spec.devices import Inventory, cpu_model_name, detect_devices
from tritongen.spec.ensemble import Spec, load_spec
from tritongen.spec.members import Ensemble, load_ensemble

ROOT = Path(__file__).resolve().parent.parent
# Reports go beside the scripts; on the GPU machine, where a run's files come back from $OUT,
# there.
OUT = Path(os.environ.get("OUT") or ROOT / "benchmarks")
# The fewest trials a quoted figure rests on: with fewer there is no spread to report.
TRIALS = 3
LEVELS = [1, 8, 32, 64]
# Distribution names of what a figure depends on; tritonserver comes in nvidia-pytriton's wheel.
VERSIONS = {
    "tritongen": "tritongen",
    "tritonserver (nvidia-pytriton)": "nvidia-pytriton",
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "numpy": "numpy",
}


def mean_sd(values: Sequence[float], digits: int = 1) -> str:
    """`mean ± sd (n = N)`: the sample standard deviation over the trials."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n = {len(values)})"


def command_line(script: str, args: argparse.Namespace | None) -> str:
    """The command that repeats this run: every option spelled out, defaults included."""
    words = [".venv/bin/python", f"benchmarks/{Path(script).name}"]
    for key, value in vars(args or argparse.Namespace()).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):  # an option given once per item, or not at all
            words += [word for item in value for word in (flag, str(item))]
        elif value not in (None, False):
            words += [flag, str(value)]
    return " ".join(words)


def versions() -> str:
    found = []
    for label, distribution in VERSIONS.items():
        try:
            found.append(f"{label} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{label} not installed")
    return ", ".join([*found, f"python {platform.python_version()}"])


def git_commit() -> str:
    """HEAD's short hash, marked when the work tree differs from it."""

    def git(*words: str) -> str:
        return subprocess.run(
            ["git", *words], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    # A copy of the tree without its history (the GPU machine's) is told its commit.
    if given := os.environ.get("TRITONGEN_COMMIT"):
        return given
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _load(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


@dataclass(frozen=True)
class Run:
    """One run of a benchmark script: its provenance, taken before anything is measured."""

    command: str
    date: str
    commit: str
    load_before: tuple[float, float, float]
    started: float

    @classmethod
    def start(cls, script: str, args: argparse.Namespace | None = None) -> Run:
        return cls(
            command=command_line(script, args),
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            commit=git_commit(),
            load_before=os.getloadavg(),
            started=time.perf_counter(),
        )

    def header(self) -> list[str]:
        """The lines every report starts with, under its title."""
        return [
            f"- run: {self.date}, commit {self.commit}, "
            f"{time.perf_counter() - self.started:.0f} s in all",
            f"- command: `{self.command}`",
            f"- machine: `nproc` {len(os.sched_getaffinity(0))}, {cpu_model_name()}; load "
            f"average (1, 5, 15 min) {_load(self.load_before)} before, "
            f"{_load(os.getloadavg())} after",
            f"- versions: {versions()}",
            "",
        ]

    def write(
        self, path: Path, title: str, body: list[str], data: dict[str, Any] | None = None
    ) -> None:
        """Write the report (and `data` beside it as .json), and print it."""
        write_report(path, [f"# {title}", "", *self.header(), *body], data)


def write_report(path: Path, lines: list[str], data: dict[str, Any] | None = None) -> None:
    """Write a report whose lines already hold its title and header (and `data` as .json)."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    path.write_text(text)
    if data is not None:
        path.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)


def round_figures(report: BenchReport) -> dict[str, dict[str, list[float]]]:
    """Per configuration, each trial's (round's) best throughput and p50 at the lowest
    concurrency: what `trials_markdown` summarises."""
    figures: dict[str, dict[str, list[float]]] = {}
    for config in report.plans:
        runs = [r[config] for r in report.rounds]
        figures[config] = {
            "best_throughput": [max(p.throughput for p in points) for points in runs],
            "p50_ms_at_lowest": [
                min(points, key=lambda p: p.concurrency).p50_ms for points in runs
            ],
        }
    return figures


def trials_markdown(figures: dict[str, dict[str, list[float]]]) -> list[str]:
    """The figures a report quotes, as mean ± standard deviation over its trials."""
    return [
        "| configuration | best samples/s, mean ± sd | p50 ms at the lowest concurrency, mean ± sd |",
        "|---|---|---|",
        *(
            f"| {config} | {mean_sd(f['best_throughput'])} | {mean_sd(f['p50_ms_at_lowest'], 2)} |"
            for config, f in figures.items()
        ),
        "",
    ]


@dataclass(frozen=True)
class ProfiledExample:
    """An example ensemble written to disk, on this machine's devices, profiled afresh."""

    spec: Spec
    ensemble: Ensemble
    inventory: Inventory
    profile: Profile
    serving: ServingCost
    profile_s: float


def profiled_example(name: str, workdir: Path) -> ProfiledExample:
    example = importlib.import_module(f"tritongen.examples.{name}")
    spec = load_spec(example.write_example(workdir / name))
    ensemble, inventory = load_ensemble(spec), detect_devices()
    profile, serving, profile_s = measure_profile(ensemble, inventory, use_cache=False)
    return ProfiledExample(spec, ensemble, inventory, profile, serving, profile_s)


def measure_example(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Naive, batch_only, tritongen's plan and the plan of the other shape, each predicted and
    served at LEVELS for `args.rounds` trials: the document prediction.md is made of."""
    ex = profiled_example(name, workdir)
    spec, ensemble, inventory, profile = ex.spec, ex.ensemble, ex.inventory, ex.profile
    plan = make_plan(spec, inventory, profile)
    other = Shape.separate if plan.groups else Shape.grouped
    plans = bench_plans(ensemble, inventory, profile, plan)
    plans[f"tritongen, {other.value}"] = make_plan(spec, inventory, profile, shape=other)
    report = run_bench(
        ensemble, inventory, profile, plans, concurrencies=LEVELS,
        interval_ms=int(args.duration_s * 1000), rounds=args.rounds,
        on_result=lambda r, config, points: print(
            f"{name} round {r + 1} {config}: {[round(p.throughput, 1) for p in points]}", flush=True
        ),
    )  # fmt: skip
    document = report.to_json()
    document["trials"] = round_figures(report)
    document["profile_s"] = round(ex.profile_s, 1)
    document["serving_cost"] = ex.serving.describe()
    document["profile"] = profile.to_json()
    document["inventory"] = inventory.to_json()
    for config, plan in plans.items():
        document["configs"][config]["served_models"] = {
            m: group_model_name(ensemble, plan, g) if (g := plan.group_of(m)) else m
            for m in plan.allocation
        }
    return document


def _runnable_cell(point: dict[str, Any]) -> str:
    """Threads runnable on the machine at the best concurrency, on average (RunQueue)."""
    runnable = point.get("runnable")
    return "" if runnable is None else f"{runnable:.1f}"


def _batches_cell(data: dict[str, Any], best: str) -> str:
    """Per member: the batch the model predicts its batcher forms / the one served at the best
    concurrency (Triton's inference and execution counts; a grouped member shows its group's)."""
    served = data["concurrency"][best].get("batches", {})
    models = data.get("served_models", {})
    return ", ".join(
        f"{m} {b:.1f}/{served.get(models.get(m, m), float('nan')):.1f}"
        for m, b in data.get("predicted_batches", {}).items()
    )


def _example_table(name: str, document: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name} (bound {document['bound']['throughput']:.1f} samples/s; profile "
        f"{document['profile_s']} s)",
        "",
        document["serving_cost"],
        "",
        "| configuration | shape | predicted | served (best) | at concurrency | served/predicted "
        "| predicted alone ms | served p50 at 1 ms | batch predicted/served | runnable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, data in document["configs"].items():
        plan = document["plans"][config]
        shape = "grouped" if plan.get("groups") else "separate"
        points = data["concurrency"]
        best = max(points, key=lambda c: points[c]["throughput"])
        lines.append(
            f"| {config} | {shape} | {data['predicted_throughput']:.1f} | "
            f"{data['best_throughput']:.1f} | {best} | **{data['measured/predicted']:.2f}** | "
            f"{data['predicted_latency_ms']:.2f} | {points['1']['p50_ms']:.2f} | "
            f"{_batches_cell(data, best)} | {_runnable_cell(points[best])} |"
        )
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in document["ratios"].items())
    lines += ["", f"Ratios (best concurrency of each, median over trials): {ratios}", ""]
    if "trials" in document:
        lines += [f"Over {document['rounds']} trials:", "", *trials_markdown(document["trials"])]
    return lines


def summary(documents: dict[str, dict[str, Any]], header: list[str]) -> list[str]:
    """The predicted-against-served report of `measure_example` documents (title first)."""
    ratios = [c["measured/predicted"] for d in documents.values() for c in d["configs"].values()]
    lines = [
        "# Predicted against served throughput",
        "",
        *header,
        "Each configuration is predicted by the serving model (docs/SERVING.md) with perf_analyzer "
        "on this machine, then served on the embedded tritonserver and measured with perf_analyzer "
        f"(gRPC, one sample per request, concurrency {', '.join(map(str, LEVELS))}). "
        "*served/predicted* compares the best concurrency's throughput (median over trials) with "
        "the prediction.",
        "",
        f"served/predicted over all {len(ratios)} configurations: min {min(ratios):.2f}, "
        f"max {max(ratios):.2f}; within 0.90–1.10: "
        f"{sum(0.9 <= r <= 1.1 for r in ratios)} of {len(ratios)}.",
        "",
    ]
    for name, document in documents.items():
        lines += _example_table(name, document)
    return lines
