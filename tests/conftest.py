"""Fixtures: tiny ONNX members, spec files, and one session-scoped embedded tritonserver that
serves every rule × transform in both combiner modes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.onnx_factory import three_members
from tritongen.plan.plan import default_plan
from tritongen.render.repository import Combiner, render_repository
from tritongen.serve.server import EmbeddedServer
from tritongen.spec.devices import detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import load_ensemble

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from tritongen.cli import main; main()"]
RULES = ["mean", "weighted_mean", "geometric_mean", "majority_vote", "max"]
TRANSFORMS = ["softmax", "none"]
WEIGHTS = [1.0, 2.0, 0.5]
MAX_BATCH = 8


# A profile measures the serving cost before the members: about three minutes on a 2-core
# machine, with the waiting stand-in's rounds idle and beside the busy members
CLI_TIMEOUT_S = 360


def run_cli(
    *args: str, cwd: Path | None = None, cache: Path | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """`tritongen ARGS` as a user runs it; `cache` isolates its cache folder."""
    env = {**os.environ, "COLUMNS": "160"}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_spec(folder: Path, data: dict, name: str = "ensemble.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_data(models: list[Path], **overrides: object) -> dict:
    data = {
        "name": "ens",
        "members": [
            {"name": p.stem, "model": str(p), "weight": w}
            for p, w in zip(models, WEIGHTS, strict=False)
        ],
        "combine": {"rule": "mean", "transform": "softmax"},
        "max_batch_size": MAX_BATCH,
    }
    data.update(overrides)
    return data


@pytest.fixture(scope="session")
def member_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return three_members(tmp_path_factory.mktemp("members"))


def combined_name(combiner: str, rule: str, transform: str) -> str:
    return f"{combiner}_{rule}_{transform}"


def build_matrix_repository(members: list[Path], root: Path) -> Path:
    """One repository holding the members once and a combined model per (mode, rule, transform)."""
    repository = root / "repository"
    repository.mkdir()
    inventory = detect_devices()
    for combiner in Combiner:
        for rule in RULES:
            for transform in TRANSFORMS:
                name = combined_name(combiner.value, rule, transform)
                data = spec_data(members, name=name, combine={"rule": rule, "transform": transform})
                ensemble = load_ensemble(load_spec(write_spec(root, data, f"{name}.yaml")))
                rendered = render_repository(
                    ensemble,
                    default_plan(ensemble, inventory),
                    inventory,
                    root / name,
                    combiner=combiner,
                )
                merge_into(rendered, repository)
    return repository


def merge_into(source: Path, repository: Path) -> None:
    for model in source.iterdir():
        if model.is_dir() and not (repository / model.name).exists():
            shutil.copytree(model, repository / model.name)


@pytest.fixture(scope="session")
def server(
    member_models: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    repository = build_matrix_repository(member_models, tmp_path_factory.mktemp("matrix"))
    with EmbeddedServer(repository, ready_timeout_s=300) as running:
        yield running


def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.2)


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2]
        if Path(f"/proc/{pid}/stat").exists()
        else "X"
    )
    return status != "Z"
