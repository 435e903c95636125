"""Rendering: configs parse as Triton's ModelConfig, the plan becomes instance groups, and a
failed build never damages what was there."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import spec_data, write_spec
from tritongen.errors import PlanError, RenderError
from tritongen.plan.plan import Plan, default_plan
from tritongen.render.repository import (
    Combiner,
    RenderTarget,
    instance_groups,
    pbtxt_string,
    render_repository,
)
from tritongen.spec.devices import Device, Inventory, detect_devices
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

GPUS = Inventory(
    (
        Device("cpu", "cpu", "cpu", 64 * 2**30, cores=16),
        Device("gpu0", "gpu", "V100-16GB", 16 * 2**30, index=0),
        Device("gpu1", "gpu", "V100-16GB", 16 * 2**30, index=1),
    )
)


@pytest.fixture
def ensemble(tmp_path: Path, member_models: list[Path]) -> Ensemble:
    return load_ensemble(load_spec(write_spec(tmp_path, spec_data(member_models))))


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_plan_becomes_one_instance_group_per_device(tmp_path: Path, ensemble: Ensemble) -> None:
    plan = Plan(
        allocation={
            "linear": {"gpu0": 2, "gpu1": 1},
            "mlp": {"cpu": 3},
            "tanh": {"gpu1": 1, "cpu": 1},
        },
        batch_size={"linear": 16, "mlp": 4, "tanh": 8},
        threads={"mlp": 2},
        queue_delay_us={"linear": 100},
    )
    repo = render_repository(ensemble, plan, GPUS, tmp_path / "repo", target=RenderTarget.docker)
    linear = _config(repo / "linear" / "config.pbtxt")
    assert linear.platform == "onnxruntime_onnx"
    assert [(g.kind, g.count, list(g.gpus)) for g in linear.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2, [0]),
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, 1, [1]),
    ]
    assert linear.max_batch_size == ensemble.spec.max_batch_size  # the API: the spec's
    assert list(linear.dynamic_batching.preferred_batch_size) == [16]  # the plan's batch
    assert linear.dynamic_batching.max_queue_delay_microseconds == 100
    mlp = _config(repo / "mlp" / "config.pbtxt")
    assert mlp.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert mlp.instance_group[0].count == 3
    assert mlp.parameters["intra_op_thread_count"].string_value == "2"
    assert not (repo / "mlp" / "1" / "model.py").exists()  # native backend: no Python
    assert (repo / "mlp" / "1" / "model.onnx").is_file()


def test_a_smaller_planned_batch_goes_to_the_batcher_not_to_the_api(
    tmp_path: Path, ensemble: Ensemble
) -> None:
    plan = default_plan(ensemble, detect_devices())
    plan.batch_size["mlp"] = 4
    repo = render_repository(ensemble, plan, detect_devices(), tmp_path / "repo")
    assert _config(repo / "ens" / "config.pbtxt").max_batch_size == ensemble.spec.max_batch_size
    mlp = _config(repo / "mlp" / "config.pbtxt")
    assert mlp.max_batch_size == ensemble.spec.max_batch_size
    assert list(mlp.dynamic_batching.preferred_batch_size) == [4]
    assert _config(repo / "ens" / "config.pbtxt").platform == "ensemble"
    assert (repo / "ens" / "1").is_dir()


def test_the_combine_step_gets_the_plans_instances(tmp_path: Path, ensemble: Ensemble) -> None:
    plan = replace(default_plan(ensemble, detect_devices()), combine_instances=3)
    repo = render_repository(ensemble, plan, detect_devices(), tmp_path / "repo")
    steps = [p.parent for p in repo.glob("*/1/combine.py")]
    (step,) = [s for s in steps if (s.parent / "config.pbtxt").is_file() and s.parent.name != "ens"]
    assert [g.count for g in _config(step.parent / "config.pbtxt").instance_group] == [3]


def test_bls_combiner_chunks_requests_by_member_batch(tmp_path: Path, ensemble: Ensemble) -> None:
    plan = default_plan(ensemble, detect_devices())
    repo = render_repository(
        ensemble, plan, detect_devices(), tmp_path / "repo", combiner=Combiner.bls
    )
    config = _config(repo / "ens" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 8
    assert (repo / "ens" / "1" / "combine.py").is_file()
    assert '"max_batch_size": 8' in config.parameters["members"].string_value


def test_every_rendered_file_is_not_world_writable(tmp_path: Path, ensemble: Ensemble) -> None:
    repo = render_repository(
        ensemble, default_plan(ensemble, detect_devices()), detect_devices(), tmp_path / "r"
    )
    for path in [repo, *repo.rglob("*")]:
        assert not path.stat().st_mode & stat.S_IWOTH, path


def test_rendered_model_code_never_imports_tritongen(tmp_path: Path, ensemble: Ensemble) -> None:
    for combiner in Combiner:
        repo = render_repository(
            ensemble,
            default_plan(ensemble, detect_devices()),
            detect_devices(),
            tmp_path / combiner.value,
            combiner=combiner,
        )
        for source in repo.rglob("*.py"):
            code = source.read_text()
            assert "import tritongen" not in code and "from tritongen" not in code


@pytest.mark.parametrize("force", [False, True])
def test_folder_not_written_by_tritongen_is_refused_even_with_force(
    tmp_path: Path, ensemble: Ensemble, force: bool
) -> None:
    destination = tmp_path / "mine"
    destination.mkdir()
    (destination / "thesis.tex").write_text("precious")
    inventory = detect_devices()
    with pytest.raises(RenderError, match=r"not written by tritongen"):
        render_repository(
            ensemble, default_plan(ensemble, inventory), inventory, destination, force=force
        )
    assert (destination / "thesis.tex").read_text() == "precious"


def test_files_added_to_a_repository_need_force_to_be_replaced(
    tmp_path: Path, ensemble: Ensemble
) -> None:
    destination, inventory = tmp_path / "repo", detect_devices()
    plan = default_plan(ensemble, inventory)
    render_repository(ensemble, plan, inventory, destination)
    render_repository(ensemble, plan, inventory, destination)  # a rebuild needs no flag
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(RenderError, match=r"holds notes.txt, which tritongen did not write"):
        render_repository(ensemble, plan, inventory, destination)
    assert (destination / "notes.txt").is_file()
    render_repository(ensemble, plan, inventory, destination, force=True)
    assert not (destination / "notes.txt").exists()
    assert (destination / "ens" / "config.pbtxt").is_file()


def test_failed_build_leaves_previous_repository_intact(tmp_path: Path, ensemble: Ensemble) -> None:
    inventory = detect_devices()
    destination = tmp_path / "repo"
    render_repository(ensemble, default_plan(ensemble, inventory), inventory, destination)
    before = sorted(str(p.relative_to(destination)) for p in destination.rglob("*"))
    broken = Plan(allocation={"linear": {"gpu7": 1}}, batch_size={"linear": 8})
    with pytest.raises(PlanError, match="member"):
        render_repository(ensemble, broken, inventory, destination)
    assert sorted(str(p.relative_to(destination)) for p in destination.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]  # no staging left


def test_readme_of_the_destination_is_kept(tmp_path: Path, ensemble: Ensemble) -> None:
    destination = tmp_path / "model_repository"
    destination.mkdir()
    (destination / "README.md").write_text("about this folder")
    inventory = detect_devices()
    render_repository(ensemble, default_plan(ensemble, inventory), inventory, destination)
    assert (destination / "README.md").read_text() == "about this folder"


def test_instance_groups_skip_devices_with_no_instance() -> None:
    groups = instance_groups({"gpu1": 2, "gpu0": 0, "cpu": 1}, GPUS)
    assert [(g.kind, g.count, g.gpus) for g in groups] == [
        ("KIND_CPU", 1, ()),
        ("KIND_GPU", 2, (1,)),
    ]


@pytest.mark.parametrize(
    "text", ["plain", 'with "quotes"', "back\\slash", "new\nline", "tab\t", "ünï"]
)
def test_pbtxt_string_round_trips_through_protobuf(text: str) -> None:
    config = text_format.Parse(f"name: {pbtxt_string(text)}", model_config_pb2.ModelConfig())
    assert config.name == text


def test_plan_without_dynamic_batching_renders_no_batcher(
    tmp_path: Path, ensemble: Ensemble
) -> None:
    inventory = detect_devices()
    plan = default_plan(ensemble, inventory)
    naive = Plan(allocation=plan.allocation, batch_size=plan.batch_size, dynamic_batching=False)
    repo = render_repository(ensemble, naive, inventory, tmp_path / "repo")
    assert not _config(repo / "mlp" / "config.pbtxt").HasField("dynamic_batching")
    assert _config(repo / "mlp" / "config.pbtxt").max_batch_size == 8
