"""Production deployment: GPU rendering for the NGC image, docker-compose.yml against the Compose
specification, and Kubernetes manifests against Kubernetes' own schemas.

No Docker engine, GPU or cluster is available here: these tests validate what is rendered
(protobuf ModelConfig, JSON schemas), they do not run it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import ROOT, spec_data, write_spec
from tritongen.errors import DeployError, SpecError
from tritongen.plan.plan import Plan
from tritongen.render.k8s import (
    MANIFESTS,
    K8sOptions,
    RepositorySource,
    default_name,
    render_manifests,
)
from tritongen.render.repository import TRT_CACHE_DIR, Combiner, RenderTarget, render_repository
from tritongen.spec.devices import Device, Inventory
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, load_ensemble

SCHEMAS = ROOT / "tests" / "schemas"
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


ONNXRUNTIME_TRT_KEYS = {
    "precision_mode",
    "max_workspace_size_bytes",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "max_cached_engines",
    "minimum_segment_size",
    "trt_timing_cache_enable",
}


def _compose_volumes() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return list(compose["services"]["tritonserver"]["volumes"])


def _accelerators(config: model_config_pb2.ModelConfig) -> list[tuple[str, dict[str, str]]]:
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    return [(a.name, dict(a.parameters)) for a in accelerators]


# -- GPU rendering for the NGC image ---------------------------------------------------------


def test_docker_target_runs_gpu_members_on_cuda_by_default(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    repo = render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.docker
    )
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
    repo = render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.docker
    )
    for gpu_member in ("linear", "mlp"):
        ((name, parameters),) = _accelerators(_config(repo / gpu_member / "config.pbtxt"))
        assert name == "tensorrt"
        # Keys the onnxruntime backend reads for its TensorRT accelerator (its README).
        assert set(parameters) <= ONNXRUNTIME_TRT_KEYS
        assert parameters["precision_mode"] == "FP16"
        assert int(parameters["max_workspace_size_bytes"]) == 1024 * 2**20  # the 1 GiB default
        # Engines go where the compose file mounts a named volume, so a restart reuses them.
        assert parameters["trt_engine_cache_enable"] == "1"
        assert f"trt-engines:{parameters['trt_engine_cache_path']}" in _compose_volumes()
    assert _accelerators(_config(repo / "tanh" / "config.pbtxt")) == []  # CPU instances only


def test_a_member_execution_overrides_the_ensembles(
    tmp_path: Path, member_models: list[Path]
) -> None:
    data = spec_data(member_models, execution={"accelerator": "tensorrt"})
    data["members"][1]["execution"] = {"accelerator": "cuda"}
    ensemble = load_ensemble(load_spec(write_spec(tmp_path, data)))
    repo = render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.docker
    )
    ((_, parameters),) = _accelerators(_config(repo / "linear" / "config.pbtxt"))
    assert parameters["precision_mode"] == "FP32"
    assert _accelerators(_config(repo / "mlp" / "config.pbtxt")) == []


def test_embedded_target_ignores_execution_options(
    tmp_path: Path, member_models: list[Path]
) -> None:
    ensemble = _ensemble(tmp_path, member_models, execution={"accelerator": "tensorrt"})
    repo = render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.embedded
    )
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
# remote.py is rendered (and imported) only for members that have a `url`: see test_cross_node.
OPTIONAL_SIBLINGS = {"remote"}


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
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.docker, combiner=combiner
    )
    sources = list(repo.rglob("*.py"))
    assert sources, "a combiner model.py is expected"
    for source in sources:
        siblings = {p.stem for p in source.parent.glob("*.py")}
        foreign = _imported_modules(source) - ALLOWED_IMPORTS - siblings - OPTIONAL_SIBLINGS
        assert not foreign, f"{source.relative_to(repo)} imports {sorted(foreign)}"


def test_embedded_member_code_would_be_caught_by_the_import_check(
    tmp_path: Path, member_models: list[Path]
) -> None:
    """The check above can fail: the embedded target's member imports onnxruntime."""
    ensemble = _ensemble(tmp_path, member_models)
    repo = render_repository(ensemble, GPU_PLAN, GPUS, tmp_path / "repo")
    imported = set().union(*(_imported_modules(p) for p in (repo / "linear" / "1").glob("*.py")))
    assert "onnxruntime" in imported - ALLOWED_IMPORTS


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


def test_docker_compose_runs_the_server_the_kubernetes_deployment_runs(
    tmp_path: Path, docker_repo: Path
) -> None:
    """Compose and Kubernetes serve a `build --target docker` repository alike: one image and
    command, the ports that command opens (published on loopback only), the same readiness
    check, the repository mounted where the command reads it, the GPUs, and restarts."""
    manifests = _manifests(render_manifests(docker_repo, tmp_path / "d", K8sOptions())[0].parent)
    container = _container(manifests)
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tritonserver"]

    assert (service["image"], service["command"]) == (container["image"], container["args"])
    published = [p.split(":") for p in service["ports"]]
    assert {host for host, _, _ in published} == {"127.0.0.1"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {int(inside) for _, _, inside in published} == set(ports.values())
    ready = container["readinessProbe"]["httpGet"]
    assert f"localhost:{ports[ready['port']]}{ready['path']}" in " ".join(
        service["healthcheck"]["test"]
    )
    (repository,) = [
        a.split("=", 1)[1] for a in service["command"] if a.startswith("--model-repository=")
    ]
    assert repository in {v.split(":")[1] for v in service["volumes"]}
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in device["capabilities"]
    assert service["restart"] in {"always", "unless-stopped", "on-failure"}


# -- Kubernetes manifests against Kubernetes' schemas -----------------------------------------

KUBERNETES_VERSIONS = ["1.27", "1.33"]  # strict schemas: unknown fields are errors


@pytest.fixture
def docker_repo(tmp_path: Path, member_models: list[Path]) -> Path:
    ensemble = _ensemble(tmp_path, member_models, execution={"accelerator": "tensorrt"})
    return render_repository(
        ensemble, GPU_PLAN, GPUS, tmp_path / "repo", target=RenderTarget.docker
    )


def _manifests(folder: Path) -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))}


def _container(manifests: dict[str, dict]) -> dict:
    (container,) = manifests["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "options",
    [
        K8sOptions(),
        K8sOptions(source=RepositorySource.init, repository_url="https://h/r.tgz"),
        K8sOptions(
            source=RepositorySource.init,
            repository_url="https://h/r.tgz",
            repository_sha256=("0" * 64,),
        ),
    ],
    ids=["pvc", "init", "init-sha256"],
)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    tmp_path: Path, docker_repo: Path, options: K8sOptions, version: str
) -> None:
    written = render_manifests(docker_repo, tmp_path / "deploy", options)
    assert sorted(p.name for p in written) == sorted(MANIFESTS)
    for path in written:
        (document,) = yaml.safe_load_all(path.read_text())
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_schemas_reject_a_misspelt_probe(tmp_path: Path, docker_repo: Path) -> None:
    render_manifests(docker_repo, tmp_path / "deploy", K8sOptions())
    deployment = _manifests(tmp_path / "deploy")["deployment.yaml"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readynessProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readynessProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_deployment_requests_the_plans_gpus_and_probes_readiness(
    tmp_path: Path, docker_repo: Path
) -> None:
    manifests = _manifests(render_manifests(docker_repo, tmp_path / "d", K8sOptions())[0].parent)
    container = _container(manifests)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}  # gpu0 and gpu1
    # CPU: tanh's 2 instances x 4 threads, plus the combine step's instance.
    assert container["resources"]["requests"] == {"cpu": "9"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"models": "/models", "dshm": "/dev/shm", "trt-engines": TRT_CACHE_DIR}
    pod = manifests["deployment.yaml"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": "ens-models",
        "readOnly": True,
    }


def test_service_exposes_http_grpc_and_metrics_of_the_deployments_pods(
    tmp_path: Path, docker_repo: Path
) -> None:
    manifests = _manifests(render_manifests(docker_repo, tmp_path / "d", K8sOptions())[0].parent)
    service = manifests["service.yaml"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    pod_labels = manifests["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    named_ports = {p["name"] for p in _container(manifests)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named_ports


def test_hpa_scales_on_the_metric_that_the_adapter_rule_serves(
    tmp_path: Path, docker_repo: Path
) -> None:
    options = K8sOptions(min_replicas=2, max_replicas=6, queue_target_us=20_000)
    manifests = _manifests(render_manifests(docker_repo, tmp_path / "d", options)[0].parent)
    hpa = manifests["hpa.yaml"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == manifests["deployment.yaml"]["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "20000"}
    adapter = yaml.safe_load(manifests["prometheus-adapter.yaml"]["data"]["config.yaml"])
    (rule,) = adapter["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
    assert "nv_inference_request_success" in rule["metricsQuery"]


def test_init_container_downloads_the_repository_into_the_models_volume(
    tmp_path: Path, docker_repo: Path
) -> None:
    options = K8sOptions(source=RepositorySource.init, repository_url="https://h/repo.tar.gz")
    manifests = _manifests(render_manifests(docker_repo, tmp_path / "d", options)[0].parent)
    pod = manifests["deployment.yaml"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert {"name": "REPOSITORY_URL", "value": "https://h/repo.tar.gz"} in init["env"]
    assert init["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert {v["name"]: v for v in pod["volumes"]}["models"] == {"name": "models", "emptyDir": {}}


@pytest.mark.parametrize(
    ("hashes", "message"),
    [
        (("abc",), "give 64 hex digits"),
        (("a" * 64, "b" * 64), "one repository, one hash"),
        (("node-a=" + "a" * 64,), "one repository, one hash"),
    ],
)
def test_bad_repository_sha256_is_one_deploy_error(
    tmp_path: Path, docker_repo: Path, hashes: tuple[str, ...], message: str
) -> None:
    with pytest.raises(DeployError, match=message):
        options = K8sOptions(
            source=RepositorySource.init, repository_url="https://h/r.tgz", repository_sha256=hashes
        )
        render_manifests(docker_repo, tmp_path / "d", options)


def test_cpu_only_plan_requests_no_gpu(tmp_path: Path, member_models: list[Path]) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    plan = Plan(
        allocation={m.name: {"cpu": 1} for m in ensemble.members}, batch_size=GPU_PLAN.batch_size
    )
    repo = render_repository(ensemble, plan, GPUS, tmp_path / "repo", target=RenderTarget.docker)
    manifests = _manifests(render_manifests(repo, tmp_path / "d", K8sOptions())[0].parent)
    container = _container(manifests)
    assert "limits" not in container["resources"]
    assert "tolerations" not in manifests["deployment.yaml"]["spec"]["template"]["spec"]
    assert "--allow-gpu-metrics=false" in container["args"]
    kubernetes_validate.validate(manifests["deployment.yaml"], KUBERNETES_VERSIONS[-1], strict=True)


def test_gpus_a_pod_cannot_number_are_refused(tmp_path: Path, member_models: list[Path]) -> None:
    ensemble = _ensemble(tmp_path, member_models)
    plan = Plan(
        allocation={"linear": {"gpu1": 1}, "mlp": {"gpu1": 1}, "tanh": {"cpu": 1}},
        batch_size=GPU_PLAN.batch_size,
    )
    repo = render_repository(ensemble, plan, GPUS, tmp_path / "repo", target=RenderTarget.docker)
    with pytest.raises(DeployError, match=r"GPUs \[1\].*numbers them 0-0"):
        render_manifests(repo, tmp_path / "d", K8sOptions())


def test_default_name_is_a_dns_label() -> None:
    assert default_name("My_Ensemble") == "my-ensemble"
    assert default_name("3nets") == "triton-3nets"
    assert default_name("_" * 64).startswith("triton")


# -- the `tritongen k8s` command --------------------------------------------------------------


# -- a repository built across nodes -----------------------------------------------------------

TWO_NODES = Inventory(
    (
        Device("a-gpu0", "gpu", "A100-40GB", 40 * 2**30, index=0, node="node-a"),
        Device("b-gpu0", "gpu", "A100-40GB", 40 * 2**30, index=0, node="node-b"),
        Device("b-gpu1", "gpu", "A100-40GB", 40 * 2**30, index=1, node="node-b"),
    )
)
TWO_NODE_PLAN = Plan(
    allocation={"linear": {"a-gpu0": 1}, "mlp": {"b-gpu0": 1}, "tanh": {"b-gpu1": 2}},
    batch_size={"linear": 16, "mlp": 8, "tanh": 4},
    nodes={"linear": "node-a", "mlp": "node-b", "tanh": "node-b"},
    primary_node="node-b",
)


@pytest.fixture
def two_node_repo(tmp_path: Path, member_models: list[Path]) -> Path:
    ensemble = _ensemble(tmp_path, member_models)
    return render_repository(
        ensemble, TWO_NODE_PLAN, TWO_NODES, tmp_path / "repo", target=RenderTarget.docker
    )


def test_each_node_gets_its_own_pod_named_for_the_url_the_combiner_calls(
    tmp_path: Path, two_node_repo: Path
) -> None:
    written = render_manifests(two_node_repo, tmp_path / "deploy", K8sOptions())
    assert sorted({p.parent.name for p in written}) == ["node-a", "node-b"]
    for path in written:
        (document,) = yaml.safe_load_all(path.read_text())
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    a, b = (_manifests(tmp_path / "deploy" / node) for node in ("node-a", "node-b"))
    assert a["service.yaml"]["metadata"]["name"] == "node-a"  # DEVICES.json's url: node-a:8001
    assert _container(a)["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert _container(b)["resources"]["limits"] == {"nvidia.com/gpu": 2}
    combiner = (two_node_repo / "nodes" / "node-b" / "ens" / "config.pbtxt").read_text()
    assert "node-a:8001" in combiner


def test_node_pods_refuse_one_name_and_a_shared_archive(
    tmp_path: Path, two_node_repo: Path
) -> None:
    with pytest.raises(DeployError, match="leave out --name"):
        render_manifests(two_node_repo, tmp_path / "d", K8sOptions(name="digits"))
    shared = K8sOptions(source=RepositorySource.init, repository_url="https://h/r.tgz")
    with pytest.raises(DeployError, match=re.escape("{node}")):
        render_manifests(two_node_repo, tmp_path / "d", shared)
    per_node = K8sOptions(source=RepositorySource.init, repository_url="https://h/{node}.tgz")
    render_manifests(two_node_repo, tmp_path / "d", per_node)
    deployment = _manifests(tmp_path / "d" / "node-a")["deployment.yaml"]
    assert "https://h/node-a.tgz" in json.dumps(deployment)
    with pytest.raises(DeployError, match="node=<sha256 of its archive> once for each"):
        one_hash = dataclasses.replace(per_node, repository_sha256=("node-a=" + "a" * 64,))
        render_manifests(two_node_repo, tmp_path / "e", one_hash)
    hashes = ("node-a=" + "a" * 64, "node-b=" + "b" * 64)
    render_manifests(
        two_node_repo, tmp_path / "f", dataclasses.replace(per_node, repository_sha256=hashes)
    )
    for node, digit in (("node-a", "a"), ("node-b", "b")):
        init = _manifests(tmp_path / "f" / node)["deployment.yaml"]["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for e in init["initContainers"][0]["env"]}
        assert env["REPOSITORY_SHA256"] == digit * 64
