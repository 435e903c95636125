"""`--target docker` renders only what the NGC image can load: members on its native
onnxruntime backend and Python models that import numpy and the standard library alone. The
default CPU plan serves members in a group (a Python-backend model that opens onnxruntime
sessions, which the image's Python lacks): for that target the members are planned separate."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import spec_data, write_spec
from tests.unit.test_production import ALLOWED_IMPORTS, _imported_modules
from tritongen.errors import RenderError, SpecError
from tritongen.pipeline import shape_for
from tritongen.plan.problem import Shape
from tritongen.plan.search import make_plan
from tritongen.profile.profile import Profile, ProfileEntry, ServingCost
from tritongen.render.repository import RenderTarget, render_repository
from tritongen.spec.devices import Device, Inventory
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

CPU = Inventory((Device("cpu", "cpu", "cpu", 8 * 2**30, cores=4),))
NGC_PLATFORMS = {"onnxruntime_onnx", "ensemble"}  # what the NGC image runs natively


def _profile(names: list[str]) -> Profile:
    """CPU members whose calls cost CPU: the serving model then groups them (see
    test_serving_model's first test)."""
    serving = ServingCost(0.0005, 1e-5, 0.0003, "measured", wire_s=5e-5, client_s=2e-4)
    entries = {
        b: ProfileEntry(3000.0, 2**27, {"cpu_cost_s_per_sample": 1e-3 * (1 + 0.5 / b)})
        for b in (1, 2, 4, 8)
    }
    return Profile({n: {"cpu": dict(entries)} for n in names}, {"serving_cost": serving.to_json()})


def _ensemble(tmp_path: Path, member_models: list[Path]) -> Ensemble:
    return load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))


def test_the_default_cpu_plan_groups_members_but_not_for_the_docker_target(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    names, profile = [m.name for m in ensemble.members], _profile([p.stem for p in member_models])
    assert make_plan(names, CPU, profile).groups  # what the embedded server gets
    shape = shape_for(None, Shape.auto, RenderTarget.docker)
    plan = make_plan(names, CPU, profile, shape=shape)
    assert not plan.groups

    repo = render_repository(ensemble, plan, CPU, tmp_path / "repo", target=RenderTarget.docker)
    for config_file in repo.glob("*/config.pbtxt"):
        config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
        assert config.platform in NGC_PLATFORMS or config.backend == "python", config.name
    for source in repo.rglob("*.py"):
        siblings = {p.stem for p in source.parent.glob("*.py")}
        foreign = _imported_modules(source) - ALLOWED_IMPORTS - siblings
        assert not foreign, f"{source.relative_to(repo)} imports {sorted(foreign)}"


def test_a_grouped_plan_is_refused_for_the_docker_target(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    grouped = make_plan(
        [m.name for m in ensemble.members], CPU, _profile([p.stem for p in member_models])
    )
    with pytest.raises(RenderError, match="--shape separate"):
        render_repository(ensemble, grouped, CPU, tmp_path / "out", target=RenderTarget.docker)


def test_asking_for_groups_on_the_docker_target_is_one_line() -> None:
    with pytest.raises(SpecError, match="--shape separate") as raised:
        shape_for(None, Shape.grouped, RenderTarget.docker)
    assert "\n" not in str(raised.value)
