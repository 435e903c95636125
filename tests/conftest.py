"""Fixtures: tiny ONNX members, spec files, and one session-scoped embedded tritonserver that
serves every rule × transform in both combiner modes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.onnx_factory import three_members
from tritongen.devices import detect_devices
from tritongen.models import load_ensemble
from tritongen.plan import default_plan
from tritongen.render import Combiner, render_repository
from tritongen.server import EmbeddedServer
from tritongen.spec import load_spec

RULES = ["mean", "weighted_mean", "geometric_mean", "majority_vote", "max"]
TRANSFORMS = ["softmax", "none"]
WEIGHTS = [1.0, 2.0, 0.5]
MAX_BATCH = 8


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
                _merge(rendered, repository)
    return repository


def _merge(source: Path, repository: Path) -> None:
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
