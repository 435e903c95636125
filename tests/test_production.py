"""Production deployment: GPU rendering for the NGC image, docker-compose.yml against the Compose
specification, and Kubernetes manifests against Kubernetes' own schemas.

No Docker engine, GPU or cluster is available here: these tests validate what is rendered
(protobuf ModelConfig, JSON schemas), they do not run it.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import spec_data, write_spec
from tritongen.devices import Device, Inventory
from tritongen.errors import SpecError
from tritongen.models import Ensemble, load_ensemble
from tritongen.plan import Plan
from tritongen.render import TRT_CACHE_DIR, Combiner, Target, render_repository
from tritongen.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas"
GPUS = Inventory(
    (
        Device("cpu", "cpu", "cpu", 64 * 2**30, cores=16),
        Device("gpu0", "gpu", "A100-40GB", 40 * 2**30, index=0),
        Device("gpu1", "gpu", "A100-40GB", 40 * 2**30, index=1),
    )
)
GPU_PLAN = Plan(
    allocation={"linear": {"gpu0": 2}, "mlp": {"gpu1": 1}, "tanh": {"cpu": 2}},
    batch_size={"linear": 16, "mlp": 8, "tanh": 4},
    threads={"tanh": 4},
)


def _ensemble(tmp_path: Path, member_models: list[Path], **overrides: object) -> Ensemble:
    data = spec_data(member_models, **overrides)
    return load_ensemble(load_spec(write_spec(tmp_path, data)))


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _accelerators(config: model_config_pb2.ModelConfig) -> list[tuple[str, dict[str, str]]]:
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    return [(a.name, dict(a.parameters)) for a in accelerators]


# -- GPU rendering for the NGC image ---------------------------------------------------------


def test_docker_target_runs_gpu_members_on_cuda_by_default(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=Target.docker)
    linear = _config(repo / "linear" / "config.pbtxt")
    assert linear.platform == "onnxruntime_onnx"
    assert [(g.kind, list(g.gpus)) for g in linear.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, [0])
    ]
    assert _accelerators(linear) == []  # no accelerator: the backend's CUDA provider


def test_tensorrt_fp16_renders_the_onnxruntime_accelerator_on_gpu_members_only(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(
        tmp_path, member_models, execution={"accelerator": "tensorrt", "precision": "fp16"}
    )
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=Target.docker)
    for gpu_member in ("linear", "mlp"):
        ((name, parameters),) = _accelerators(_config(repo / gpu_member / "config.pbtxt"))
        assert name == "tensorrt"
        assert parameters == {
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(2**30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": TRT_CACHE_DIR,
        }
    assert _accelerators(_config(repo / "tanh" / "config.pbtxt")) == []  # CPU instances only


def test_a_member_execution_overrides_the_ensembles(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models, execution={"accelerator": "tensorrt"})
    data["members"][1]["execution"] = {"accelerator": "cuda"}
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, data)))
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=Target.docker)
    ((_, parameters),) = _accelerators(_config(repo / "linear" / "config.pbtxt"))
    assert parameters["precision_mode"] == "FP32"
    assert _accelerators(_config(repo / "mlp" / "config.pbtxt")) == []


def test_embedded_target_ignores_execution_options(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models, execution={"accelerator": "tensorrt"})
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=Target.embedded)
    assert _config(repo / "linear" / "config.pbtxt").backend == "python"
    assert _accelerators(_config(repo / "linear" / "config.pbtxt")) == []


@pytest.mark.parametrize(
    ("execution", "message"),
    [
        ({"precision": "fp16"}, "execution: precision fp16 needs accelerator: tensorrt"),
        (
            {"accelerator": "openvino"},
            "execution.accelerator: Input should be 'cuda' or 'tensorrt'",
        ),
        ({"precision": "int8", "accelerator": "tensorrt"}, "execution.precision"),
        ({"workspace_mb": 0}, "execution.workspace_mb"),
    ],
)
def test_bad_execution_options_are_one_spec_error(
    tmp_path: Path, member_models: list[Path], execution: dict, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")) as caught:
        _ensemble(tmp_path, member_models, execution=execution)
    assert "\n" not in str(caught.value)


ALLOWED_IMPORTS = {"numpy", "triton_python_backend_utils", *sys.stdlib_module_names}


def _imported_modules(source: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("combiner", list(Combiner))
def test_docker_target_model_code_needs_only_numpy_inside_the_ngc_image(
    tmp_path: Path, member_models: list[Path], combiner: Combiner
) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    repo = render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=Target.docker, combiner=combiner
    )
    sources = list(repo.rglob("*.py"))
    assert sources, "a combiner model.py is expected"
    for source in sources:
        siblings = {p.stem for p in source.parent.glob("*.py")}
        foreign = _imported_modules(source) - ALLOWED_IMPORTS - siblings
        assert not foreign, f"{source.relative_to(repo)} imports {sorted(foreign)}"


def test_embedded_member_code_would_be_caught_by_the_import_check(
    tmp_path: Path, member_models: list[Path]
) -> None:
    """The check above can fail: the embedded target's member imports onnxruntime."""
    ensemble = _ensemble(tmp_path, member_models)
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo")
    assert "onnxruntime" in _imported_modules(repo / "linear" / "1" / "model.py") - ALLOWED_IMPORTS


# -- docker-compose.yml against the Compose specification -------------------------------------


def _compose_validator() -> jsonschema.Draft201909Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft201909Validator(schema)


def test_docker_compose_file_is_valid_against_the_compose_specification() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert errors == []


def test_compose_schema_rejects_a_misspelt_gpu_reservation() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    reservations = compose["services"]["tritonserver"]["deploy"]["resources"]["reservations"]
    device = reservations["devices"][0]
    device["capabilitys"] = device.pop("capabilities")
    assert not _compose_validator().is_valid(compose)


def test_docker_compose_exposes_metrics_restarts_and_keeps_tensorrt_engines() -> None:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tritonserver"]
    assert "--metrics-port=8002" in service["command"]
    assert "--allow-metrics=true" in service["command"]
    assert service["restart"] == "unless-stopped"
    assert f"trt-engines:{TRT_CACHE_DIR}" in service["volumes"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["count"] == "all"
