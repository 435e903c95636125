"""Kubernetes manifests for a rendered repository (`tritongen k8s REPO -o deploy/`).

What the pod needs is read from the repository itself: its `plan.json` and the instance groups
of every `config.pbtxt` (the GPUs they are pinned to become the `nvidia.com/gpu` limit, the CPU
instances and their threads the CPU request). The manifests are Jinja2 templates under
`templates/k8s/`; each string is written as a JSON literal, which YAML reads verbatim.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import jinja2
from tritonclient.grpc import model_config_pb2

from tritongen.errors import DeployError, SpecError
from tritongen.plan.plan import Plan, load_plan
from tritongen.render.destination import MARKER
from tritongen.render.member import TRT_CACHE_DIR
from tritongen.render.nodes import NODES_DIR
from tritongen.render.templating import parse_config, templates_dir

NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
QUEUE_METRIC = "triton_queue_time_us"  # the name the Prometheus adapter rule gives the metric
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml", "prometheus-adapter.yaml")
SHA256_ENTRY = re.compile(r"^([a-z0-9-]{1,63}=)?[0-9a-fA-F]{64}$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names: RFC 1035, <= 63
KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU
KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU


class RepositorySource(str, Enum):
    pvc = "pvc"  # a PersistentVolumeClaim that holds the repository, mounted read-only
    init = "init"  # an init container downloads a .tar.gz of the repository into an emptyDir


@dataclass(frozen=True)
class K8sOptions:
    name: str | None = None  # default: the ensemble's name, made a DNS label
    namespace: str = "default"
    image: str = NGC_IMAGE
    source: RepositorySource = RepositorySource.pvc
    claim: str | None = None  # pvc: the claim's name, default `<name>-models`
    repository_url: str | None = None  # init: where the .tar.gz of the repository is
    # init: the archive's sha256, which the init container checks before unpacking it; for a
    # repository across nodes, one `node=hex` per node
    repository_sha256: tuple[str, ...] = ()
    init_image: str = "busybox:1.36"
    min_replicas: int = 1
    max_replicas: int = 4
    queue_target_us: int = 50_000  # average queue time per request that triggers a scale-up

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", RepositorySource(self.source))
        if self.source is RepositorySource.init and not self.repository_url:
            raise DeployError("--repository-source init needs --repository-url (a .tar.gz URL)")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise DeployError(
                f"replicas: need 1 <= --min-replicas ({self.min_replicas}) "
                f"<= --max-replicas ({self.max_replicas})"
            )
        if self.queue_target_us < 1:
            raise DeployError("--queue-target-us must be at least 1")
        for entry in self.repository_sha256:
            if not SHA256_ENTRY.match(entry):
                raise DeployError(
                    f"--repository-sha256 {entry!r}: give 64 hex digits (`sha256sum` of the "
                    "archive), or node=<64 hex digits> per node"
                )
        if self.repository_sha256 and self.source is not RepositorySource.init:
            raise DeployError(
                "--repository-sha256 checks the init container's download: add --repository-source init"
            )
        for flag, value in (("--name", self.name), ("--namespace", self.namespace)):
            if value is not None and not _is_dns_label(value):
                raise DeployError(f"{flag} {value!r}: use a-z 0-9 -, start with a letter, <= 63")


@dataclass(frozen=True)
class Footprint:
    """What one pod must be given to run the repository as planned."""

    gpus: int  # nvidia.com/gpu: the pod sees its GPUs as 0..gpus-1
    cpus: int  # CPU instances x their intra-op threads, at least 1
    tensorrt: bool  # some member builds TensorRT engines: mount the engine cache


@dataclass(frozen=True)
class Repository:
    path: Path
    ensemble: str
    plan: Plan
    configs: tuple[model_config_pb2.ModelConfig, ...]


def render_manifests(repository: str | Path, output: str | Path, options: K8sOptions) -> list[Path]:
    """Write the Deployment, Service, HPA and Prometheus adapter rule into `output`; for a
    repository built across nodes, one set per node into `output/<node>/` (see `_node_pods`)."""
    repo = read_repository(Path(repository))
    if not repo.plan.spans_nodes:
        if any("=" in entry for entry in options.repository_sha256):
            raise DeployError("--repository-sha256: one repository, one hash (no node=)")
        if len(options.repository_sha256) > 1:
            raise DeployError("--repository-sha256: one repository, one hash; give it once")
        return _write_pod(repo, Path(output), options)
    return [
        path
        for node_repo, node_options in _node_pods(repo, repo.plan.node_names, options)
        for path in _write_pod(node_repo, Path(output) / node_repo.path.name, node_options)
    ]


def _node_pods(
    repo: Repository, nodes: list[str], options: K8sOptions
) -> list[tuple[Repository, K8sOptions]]:
    """Per node: its repository (`DIR/nodes/<node>`) and its options. Each node's Service is
    named after the node, so the url the primary's combiner calls by default (`<node>:8001`,
    DEVICES.json) resolves in the namespace; an init-container URL names each node's archive
    with `{node}`."""
    if options.name is not None:
        raise DeployError(
            f"{repo.path}: spans nodes ({', '.join(nodes)}), whose Services are named after "
            "them (the combiner calls <node>:8001); leave out --name"
        )
    if options.source is RepositorySource.init and "{node}" not in str(options.repository_url):
        raise DeployError(
            f"--repository-url: {repo.path} spans nodes ({', '.join(nodes)}); put {{node}} in "
            "the URL where each node's archive name differs"
        )
    pods = []
    for node in nodes:
        if not _is_dns_label(node):
            raise DeployError(
                f"node {node!r} (DEVICES.json) is not a Kubernetes Service name: use a-z 0-9 -, "
                "start with a letter, <= 63"
            )
        path = repo.path / NODES_DIR / node
        node_repo = replace(repo, path=path, configs=_configs(path))
        url = options.repository_url
        pods.append(
            (
                node_repo,
                replace(
                    options,
                    name=node,
                    repository_url=url and url.replace("{node}", node),
                    repository_sha256=_node_hash(options.repository_sha256, node, nodes),
                ),
            )
        )
    return pods


def _node_hash(entries: tuple[str, ...], node: str, nodes: list[str]) -> tuple[str, ...]:
    """The `node=hex` entry of `node`; none when no hash was given at all."""
    if not entries:
        return ()
    hashes = dict(entry.split("=", 1) for entry in entries if "=" in entry)
    if len(hashes) != len(entries) or set(hashes) != set(nodes):
        raise DeployError(
            f"--repository-sha256: the repository spans nodes ({', '.join(nodes)}); give "
            "node=<sha256 of its archive> once for each of them"
        )
    return (hashes[node],)


def _write_pod(repo: Repository, output: Path, options: K8sOptions) -> list[Path]:
    footprint = pod_footprint(repo.configs)
    values = _template_values(repo, footprint, options)
    output.mkdir(parents=True, exist_ok=True)
    env = _environment()
    written = []
    for manifest in MANIFESTS:
        path = output / manifest
        path.write_text(env.get_template(f"{manifest}.j2").render(**values))
        written.append(path)
    return written


def read_repository(path: Path) -> Repository:
    """A repository written by `tritongen build --target docker`, with its plan."""
    if not path.is_dir():
        raise DeployError(
            f"{path}: no such model repository; build one with "
            "`tritongen build SPEC --target docker -o REPO`"
        )
    marker = _read_marker(path)
    if marker.get("target") != "docker":
        raise DeployError(
            f"{path}: was built for the {marker.get('target')} target, whose members need "
            "onnxruntime inside the Python backend; rebuild it with --target docker"
        )
    if not (path / "plan.json").is_file():
        raise DeployError(
            f"{path}/plan.json: missing; rebuild the repository with `tritongen build`"
        )
    try:
        plan = load_plan(path / "plan.json")
    except SpecError as exc:
        raise DeployError(str(exc)) from None
    return Repository(path, str(marker["ensemble"]), plan, _configs(path))


def _configs(path: Path) -> tuple[model_config_pb2.ModelConfig, ...]:
    return tuple(
        parse_config(config.read_text(), config.parent.name)
        for config in sorted(path.glob("*/config.pbtxt"))
    )


def _read_marker(path: Path) -> dict[str, str]:
    try:
        marker = json.loads((path / MARKER).read_text())
    except FileNotFoundError:
        raise DeployError(
            f"{path}: not written by `tritongen build` (no {MARKER} file); build it first"
        ) from None
    except (OSError, ValueError) as exc:
        raise DeployError(f"{path}/{MARKER}: unreadable ({exc}); rebuild the repository") from None
    if not isinstance(marker, dict) or "ensemble" not in marker:
        raise DeployError(f"{path}/{MARKER}: names no ensemble; rebuild the repository")
    return marker


def pod_footprint(configs: tuple[model_config_pb2.ModelConfig, ...]) -> Footprint:
    gpus: set[int] = set()
    cpus = 0
    for config in configs:
        for group in config.instance_group:
            if group.kind == KIND_GPU:
                gpus.update(group.gpus or [0])
            elif group.kind == KIND_CPU:
                cpus += group.count * _threads(config)
    if gpus and gpus != set(range(len(gpus))):
        raise DeployError(
            f"the plan pins members to GPUs {sorted(gpus)}, but a pod given {len(gpus)} GPUs "
            f"numbers them 0-{len(gpus) - 1}; re-plan with a DEVICES.json of GPUs 0..n-1"
        )
    tensorrt = any(
        a.name == "tensorrt"
        for c in configs
        for a in c.optimization.execution_accelerators.gpu_execution_accelerator
    )
    return Footprint(gpus=len(gpus), cpus=max(1, cpus), tensorrt=tensorrt)


def _threads(config: model_config_pb2.ModelConfig) -> int:
    if "intra_op_thread_count" not in config.parameters:
        return 1
    value = config.parameters["intra_op_thread_count"].string_value
    return max(1, int(value)) if value.isdigit() else 1


def default_name(ensemble: str) -> str:
    """`My_Ensemble` -> `my-ensemble`; a name that would not start with a letter gets a prefix."""
    name = re.sub(r"[^a-z0-9-]+", "-", ensemble.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"triton-{name}".rstrip("-")
    return name[:50].rstrip("-")  # room for the `-models` and `-prometheus-adapter` suffixes


def _is_dns_label(value: str) -> bool:
    return len(value) <= 63 and DNS_LABEL.match(value) is not None


def _template_values(repo: Repository, footprint: Footprint, options: K8sOptions) -> dict:
    name = options.name or default_name(repo.ensemble)
    return {
        "name": name,
        "ensemble": repo.ensemble,
        "namespace": options.namespace,
        "labels": {"app.kubernetes.io/name": "tritonserver", "app.kubernetes.io/instance": name},
        "image": options.image,
        "source": options.source.value,
        "claim": options.claim or f"{name}-models",
        "repository_url": options.repository_url,
        "repository_sha256": options.repository_sha256[0].lower()
        if options.repository_sha256
        else None,
        "init_image": options.init_image,
        "gpus": footprint.gpus,
        "cpus": footprint.cpus,
        "tensorrt": footprint.tensorrt,
        "trt_cache_dir": TRT_CACHE_DIR,
        "predicted_throughput": repo.plan.predicted_throughput,
        "min_replicas": options.min_replicas,
        "max_replicas": options.max_replicas,
        "queue_metric": QUEUE_METRIC,
        "queue_target_us": options.queue_target_us,
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "k8s")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
