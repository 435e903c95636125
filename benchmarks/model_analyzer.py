"""The real peer: Triton Model Analyzer's quick search against tritongen, on a 3-member CPU
ensemble, then both winners re-measured and compared in one run.

1. Model Analyzer 1.58.0 (`triton-model-analyzer` on PyPI) is installed in `.venv-ma/`
   (git-ignored), apart from tritongen's own dependencies (pip resolves it beside them:
   numpy 1.26, tritonclient 2.51, protobuf 4.25).
2. The digits example (3 members + the combine step: the 4 composing models Model Analyzer
   supports at most) is rendered with `--quick` (one CPU instance each); preferred batch sizes
   are removed, since Model Analyzer sets `max_batch_size` itself and skips configurations
   whose preferred size exceeds it.
3. Model Analyzer runs its quick search in local launch mode against the embedded
   tritonserver: small wrapper scripts on PATH set LD_LIBRARY_PATH (and, for tritonserver,
   the backend directory and the PATH its Python stubs need); `triton_server_flags` bind
   127.0.0.1; every composing model is CPU-only; perf_analyzer sends zeros (its random bytes
   are NaN as FP32, which the ensemble refuses).
4. Its best configuration (from its checkpoint) and tritongen's plan (profile + plan, cached)
   are served in turn, `--rounds` times alternating, measured with perf_analyzer at the same
   concurrencies; mean ± sd over the rounds are reported.

    .venv/bin/python benchmarks/model_analyzer.py [--rounds 3] [--workdir DIR]
    .venv/bin/python benchmarks/model_analyzer.py --smoke   # a few configurations

Writes benchmarks/model_analyzer.md (with --smoke, a check that the script works and not a
measurement: model_analyzer_smoke.md in the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from common import TRIALS, Run, mean_sd
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tritongen.bench.perf import measure, perf_analyzer_binary, perf_environment
from tritongen.examples.digits import write_example
from tritongen.pipeline import build
from tritongen.render.repository import Combiner, parse_config
from tritongen.serve.server import (
    EmbeddedServer,
    find_tritonserver,
    free_port,
    prepare_backends,
    server_environment,
)

ROOT = Path(__file__).resolve().parent.parent
MA_VENV = ROOT / ".venv-ma"
MA_REQUIREMENTS = ["triton-model-analyzer==1.58.0", "tritonclient[all]==2.51.0", "numpy<2"]
ENSEMBLE = "digits"
CONCURRENCIES = (1, 4, 16, 64, 128)  # 128: a grouped plan needs requests in flight for full batches
FULL_SEARCH: dict[str, Any] = {}  # Model Analyzer's own quick-search limits
SMOKE_SEARCH = {
    "run_config_search_max_instance_count": 2,
    "run_config_search_max_model_batch_size": 4,
    "run_config_search_max_concurrency": 8,
    "concurrency_sweep_disable": True,
}


@dataclass
class SearchResult:
    wall_s: float
    measurements: int  # perf_analyzer runs Model Analyzer made
    configurations: int  # distinct ensemble configurations it measured
    best_name: str
    best_throughput: float  # what Model Analyzer measured for it
    composing: dict[str, model_config_pb2.ModelConfig]  # model -> Model Analyzer's config


def ma_venv() -> Path:
    """`.venv-ma/bin`, made on first use."""
    if not (MA_VENV / "bin" / "model-analyzer").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(MA_VENV)], check=True)
        pip = [str(MA_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, *MA_REQUIREMENTS], check=True)
    return MA_VENV / "bin"


def start_repository(spec: Path, folder: Path) -> Path:
    """tritongen's `--quick` repository, without preferred batch sizes or warm-up (Model
    Analyzer sets `max_batch_size` itself: a larger warm-up batch would fail the load)."""
    _, repository = build(spec, folder, quick=True, combiner=Combiner.ensemble, force=True)
    for path in repository.glob("*/config.pbtxt"):
        config = parse_config(path.read_text(), path.parent.name)
        config.ClearField("model_warmup")
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.ClearField("preferred_batch_size")
        path.write_text(text_format.MessageToString(config))
    return repository


def write_wrappers(folder: Path) -> Path:
    """`tritonserver` and `perf_analyzer` scripts that Model Analyzer finds on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    install = find_tritonserver()
    server_env = server_environment(install)
    perf_env = perf_environment()
    scripts = {
        "tritonserver": (
            f'export LD_LIBRARY_PATH="{server_env["LD_LIBRARY_PATH"]}"\n'
            f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
            f'exec "{install.binary}" --backend-directory="{prepare_backends(install)}" "$@"\n'
        ),
        "perf_analyzer": (
            f'export LD_LIBRARY_PATH="{perf_env.get("LD_LIBRARY_PATH", "")}"\n'
            f'exec "{perf_analyzer_binary()}" "$@"\n'
        ),
    }
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return folder


def ma_config(repository: Path, work: Path, wrappers: Path, search: dict[str, Any]) -> Path:
    http, grpc, metrics = free_port(), free_port(), free_port()
    members = sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))
    config = {
        "model_repository": str(repository),
        "output_model_repository_path": str(work / "output"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(work / "checkpoints"),
        "export_path": str(work / "export"),
        "triton_launch_mode": "local",
        "triton_server_path": str(wrappers / "tritonserver"),
        "perf_analyzer_path": str(wrappers / "perf_analyzer"),
        "triton_http_endpoint": f"127.0.0.1:{http}",
        "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
        "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        "triton_server_flags": {
            "http-address": "127.0.0.1",
            "grpc-address": "127.0.0.1",
            "metrics-address": "127.0.0.1",
        },
        "run_config_search_mode": "quick",
        "cpu_only_composing_models": [m for m in members if m != ENSEMBLE],
        "perf_analyzer_flags": {"input-data": "zero"},
        "profile_models": {ENSEMBLE: {"cpu_only": True}},
        "skip_detailed_reports": True,
        **search,
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_model_analyzer(config: Path, work: Path, bin_dir: Path, wrappers: Path) -> float:
    """Model Analyzer's `profile`, its output in work/model_analyzer.log; wall seconds."""
    for stale in ("output", "checkpoints", "export"):
        shutil.rmtree(work / stale, ignore_errors=True)
    env = {**os.environ, "PATH": os.pathsep.join([str(wrappers), str(bin_dir), os.environ["PATH"]])}
    started = time.perf_counter()
    with open(work / "model_analyzer.log", "w") as log:
        subprocess.run(
            [str(bin_dir / "model-analyzer"), "profile", "-f", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, check=False,
        )  # fmt: skip
    return time.perf_counter() - started


def read_search(work: Path, wall_s: float) -> SearchResult:
    """Model Analyzer's measurements, from its log and its last checkpoint."""
    log = (work / "model_analyzer.log").read_text()
    profiled = re.findall(rf"Profiling ({ENSEMBLE}_config_\w+): concurrency=(\d+)", log)
    checkpoint = json.loads(max((work / "checkpoints").glob("*.ckpt")).read_text())
    measured = _measurements(checkpoint)
    if not measured:
        raise SystemExit(f"Model Analyzer measured no configuration: see {work}/model_analyzer.log")
    best_name, composing, best_throughput = max(measured, key=lambda m: m[2])
    configs = {
        c["model_config"]["name"]: json_format.ParseDict(
            c["model_config"], model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        for c in composing
    }
    return SearchResult(
        wall_s, len(profiled), len({n for n, _ in profiled}), best_name, best_throughput, configs
    )


def _measurements(checkpoint: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], float]]:
    """(ensemble configuration, its composing configurations, inferences/s) of every
    perf_analyzer run in the checkpoint."""
    found = []
    for by_config in checkpoint["ResultManager.results"]["_results"].values():
        for name, (run, measurements) in by_config.items():
            composing = run["_model_run_configs"][0].get("_composing_config_variants", [])
            for measurement in measurements.values():
                tags = measurement["_model_config_measurements"][0]["_non_gpu_data_from_tag"]
                if "perf_throughput" in tags:
                    found.append((name, composing, float(tags["perf_throughput"][1]["_value"])))
    return found


def analyzer_repository(start: Path, search: SearchResult, folder: Path) -> Path:
    """The start repository with each composing model configured as Model Analyzer chose."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(start, folder)
    for model, config in search.composing.items():
        config.name = model
        (folder / model / "config.pbtxt").write_text(text_format.MessageToString(config))
    ensemble = parse_config((folder / ENSEMBLE / "config.pbtxt").read_text(), ENSEMBLE)
    ensemble.max_batch_size = min(c.max_batch_size for c in search.composing.values())
    (folder / ENSEMBLE / "config.pbtxt").write_text(text_format.MessageToString(ensemble))
    return folder


def compare_in_one_run(
    repositories: dict[str, Path], rounds: int
) -> dict[str, list[dict[int, float]]]:
    """Each round's samples/s per concurrency of each repository, served in alternating order."""
    runs: dict[str, list[dict[int, float]]] = {name: [] for name in repositories}
    for index in range(rounds):
        order = list(repositories) if index % 2 == 0 else list(reversed(repositories))
        for name in order:
            with EmbeddedServer(repositories[name]) as server:
                points = measure(server.grpc_url, ENSEMBLE, list(CONCURRENCIES))
            runs[name].append({p.concurrency: p.throughput for p in points})
    return runs


def report(
    args: argparse.Namespace, search: SearchResult, measured: dict[str, list[dict[int, float]]]
) -> list[str]:
    best = {name: [max(by_c.values()) for by_c in trials] for name, trials in measured.items()}
    ratios = [t / m for t, m in zip(best["tritongen"], best["model_analyzer"], strict=True)]
    setting = (
        "smoke setting (a few configurations; not a measurement)"
        if args.smoke
        else "Model Analyzer's default quick-search limits"
    )
    composing = ", ".join(
        f"{m}: {sum(g.count for g in c.instance_group)} instance(s), max batch {c.max_batch_size}"
        for m, c in sorted(search.composing.items())
    )
    lines = [
        f"Search: {setting}; served on the embedded tritonserver.",
        "",
        "## Model Analyzer's quick search (local launch mode, CPU only, perf_analyzer --input-data zero)",
        "",
        f"- wall time: **{search.wall_s:.0f} s**; perf_analyzer runs: **{search.measurements}**; ensemble configurations measured: **{search.configurations}**",
        f"- best: `{search.best_name}` at **{search.best_throughput:.1f} inferences/s** (Model Analyzer's own measurement)",
        f"- its composing models: {composing}",
        "",
        f"## Re-measured, compared in one run ({args.rounds} rounds alternating; samples/s, "
        "mean ± sd)",
        "",
        "| configuration | " + " | ".join(f"c={c}" for c in CONCURRENCIES) + " | best |",
        "|---|" + "---|" * (len(CONCURRENCIES) + 1),
        *(
            f"| {name} | "
            + " | ".join(mean_sd([by_c[c] for by_c in trials]) for c in CONCURRENCIES)
            + f" | {mean_sd(best[name])} |"
            for name, trials in measured.items()
        ),
        "",
        "tritongen / Model Analyzer (best concurrency of each, per round): "
        f"**{mean_sd(ratios, 2)}**",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="A few configurations only.")
    parser.add_argument("--rounds", type=int, default=TRIALS)
    parser.add_argument("--workdir", type=Path, help="Keeps (and reuses) the trained members.")
    parser.add_argument(
        "--reuse-search", action="store_true", help="Re-measure the search kept in --workdir."
    )
    args = parser.parse_args()
    run = Run.start(__file__, args)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="model-analyzer-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "digits" / "ensemble.yaml"
    if not spec.is_file():
        spec = write_example(work / "digits")
    bin_dir = ma_venv()
    start = start_repository(spec, work / "start")
    wrappers = write_wrappers(work / "bin")
    config = ma_config(start, work, wrappers, SMOKE_SEARCH if args.smoke else FULL_SEARCH)
    timing = work / "search_wall_s.json"
    if not (args.reuse_search and timing.is_file()):
        timing.write_text(json.dumps(run_model_analyzer(config, work, bin_dir, wrappers)))
    search = read_search(work, float(json.loads(timing.read_text())))
    _, ours = build(spec, work / "tritongen", combiner=Combiner.ensemble, force=True)
    theirs = analyzer_repository(start, search, work / "model_analyzer")
    measured = compare_in_one_run({"model_analyzer": theirs, "tritongen": ours}, args.rounds)
    out = work / "model_analyzer_smoke.md" if args.smoke else ROOT / "benchmarks/model_analyzer.md"
    title = "Model Analyzer 1.58 against tritongen: the digits ensemble on this machine"
    run.write(out, title, report(args, search, measured))


if __name__ == "__main__":
    main()
