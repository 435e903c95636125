"""Render a Triton model repository from an ensemble and its plan.

Everything is written into a temporary folder beside the destination, every config.pbtxt is
parsed back into Triton's `ModelConfig` protobuf, and only then does the new repository take
the destination's place: a failed build leaves the previous repository as it was.

A plan whose members live on several nodes renders one repository per node, each served by
its own tritonserver: `DIR/nodes/<node>/`. The primary node's holds the (BLS) combiner and its
own members and calls the others at their node's gRPC url; the others hold their members
alone. They cannot sit beside the primary's models at the top of DIR: Triton takes every
folder of a repository for a model and refuses to start on one that is not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritongen.errors import RenderError, SpecError
from tritongen.plan.plan import Plan
from tritongen.spec.devices import Inventory
from tritongen.spec.ensemble import NAME_RULE, Accelerator, ExecutionSpec, TlsFiles
from tritongen.spec.members import Ensemble, MemberModel

MARKER = ".tritongen"
NODES_DIR = "nodes"  # DIR/nodes/<node>/: one repository per node of a multi-node plan
KEPT_FILES = ("README.md",)  # carried over from the destination (the folder's own README)
COMBINER_INSTANCES = 2  # an async BLS instance moves one batch at a time: keep two in flight
# Where TensorRT keeps built engines so that a restart skips the build; docker-compose.yml and
# the Kubernetes manifests mount a volume here.
TRT_CACHE_DIR = "/var/cache/trt-engines"


class Combiner(str, Enum):
    ensemble = "ensemble"
    bls = "bls"


class Target(str, Enum):
    embedded = "embedded"  # members on the Python backend (the embedded server has no other)
    docker = "docker"  # members on Triton's native onnxruntime backend (NGC image)


@dataclass(frozen=True)
class InstanceGroup:
    kind: str
    count: int
    gpus: tuple[int, ...] = ()


def render_repository(
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    destination: str | Path,
    *,
    combiner: Combiner | None = None,
    target: Target = Target.embedded,
    force: bool = False,
) -> Path:
    """Write the repository for `ensemble` laid out by `plan` into `destination`.

    `combiner` None chooses: BLS when some member is served elsewhere (a spec `url`, or
    another node of the plan), else Triton's ensemble."""
    destination = Path(destination).resolve()
    check_destination(destination, force)
    chosen = choose_combiner(ensemble, plan, combiner)
    _check_remote_members(ensemble, plan, chosen)
    _check_plan(ensemble, plan, inventory)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        _write_all(staging, ensemble, plan, inventory, chosen, Target(target))
        _carry_kept_files(destination, staging)
        _swap(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _write_all(
    root: Path,
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    combiner: Combiner,
    target: Target,
) -> None:
    env = _environment()
    marker: dict[str, Any] = {
        "ensemble": ensemble.spec.name,
        "combiner": combiner.value,
        "target": target.value,
    }
    if plan.spans_nodes:
        _write_nodes(root, env, ensemble, plan, inventory, target)
        marker |= {"nodes": plan.node_names, "primary_node": plan.primary_node}
    else:
        _write_repository(root, env, ensemble, plan, inventory, combiner, target)
    plan.save(root / "plan.json")
    marker["entries"] = sorted(p.name for p in root.iterdir())  # what --force may replace
    (root / MARKER).write_text(json.dumps(marker) + "\n")
    _restrict_permissions(root)


def _write_repository(
    root: Path,
    env: jinja2.Environment,
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    combiner: Combiner,
    target: Target,
) -> None:
    """The members served here (those without a url) and the combiner."""
    remote = ensemble.spec.remote_urls
    for member in ensemble.members:
        if member.name not in remote:
            _write_member(root, env, ensemble, member, plan, inventory, target)
    if combiner is Combiner.bls:
        _write_bls(root, env, ensemble, plan)
    else:
        _write_native_ensemble(root, env, ensemble, plan)


def _write_nodes(
    root: Path,
    env: jinja2.Environment,
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    target: Target,
) -> None:
    """`nodes/<primary>/`: the BLS combiner and the primary's members, calling the others at
    their node's url; `nodes/<other>/`: that node's members alone."""
    for node in plan.node_names:
        folder = inside(root, NODES_DIR, node)
        folder.mkdir(parents=True)
        if node == plan.primary_node:
            calling = calling_other_nodes(ensemble, plan, inventory)
            _write_repository(folder, env, calling, plan, inventory, Combiner.bls, target)
            continue
        for member in ensemble.members:
            if plan.nodes[member.name] == node and member.name not in ensemble.spec.remote_urls:
                _write_member(folder, env, ensemble, member, plan, inventory, target)


def calling_other_nodes(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> Ensemble:
    """`ensemble` as the primary node sees it: members on other nodes get their node's url
    and TLS files (a `url` the spec gives already wins)."""
    members = [
        m
        if m.url or plan.nodes[m.name] == plan.primary_node
        else m.model_copy(
            update={
                "url": inventory.node_url(plan.nodes[m.name]),
                "tls": inventory.node_tls.get(plan.nodes[m.name]),
            }
        )
        for m in ensemble.spec.members
    ]
    return replace(ensemble, spec=ensemble.spec.model_copy(update={"members": members}))


def served_nodes(repository: Path) -> list[str]:
    """The nodes of a multi-node build (`DIR/nodes/<node>/`); empty for one repository."""
    nodes = (read_marker(repository) or {}).get("nodes")
    return [str(n) for n in nodes] if isinstance(nodes, list) else []


def _restrict_permissions(root: Path) -> None:
    """Folders 0755, files 0644, whatever the umask: nobody else may rewrite served code."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_member(
    root: Path,
    env: jinja2.Environment,
    ensemble: Ensemble,
    member: MemberModel,
    plan: Plan,
    inventory: Inventory,
    target: Target,
) -> None:
    batch = plan.batch_size[member.name]
    groups = instance_groups(plan.allocation[member.name], inventory)
    config = env.get_template("member.pbtxt.j2").render(
        ensemble_name=ensemble.spec.name,
        member=member,
        target=target.value,
        batch_size=batch,
        instance_groups=groups,
        tensorrt=_tensorrt_parameters(ensemble.spec.execution_of(member.name), groups, target),
        preferred_batch_sizes=[batch] if batch > 1 else [],
        queue_delay_us=plan.queue_delay_us.get(member.name, 0),
        dynamic_batching=plan.dynamic_batching,
        threads=plan.threads.get(member.name, 1),
    )
    version = _model_dir(root, member.name, config)
    shutil.copyfile(member.path, version / "model.onnx")
    if target is Target.embedded:
        _copy_template(env, "member_model.py", version / "model.py")


def _tensorrt_parameters(
    execution: ExecutionSpec, groups: list[InstanceGroup], target: Target
) -> dict[str, str]:
    """The TensorRT accelerator's parameters for the native backend; empty when the member
    runs on the CUDA provider (the backend's default on KIND_GPU) or has no GPU instance."""
    on_gpu = any(g.kind == "KIND_GPU" for g in groups)
    if target is not Target.docker or not on_gpu or execution.accelerator is Accelerator.cuda:
        return {}
    return {
        "precision_mode": execution.precision.value.upper(),
        "max_workspace_size_bytes": str(execution.workspace_mb * 2**20),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": TRT_CACHE_DIR,
    }


def _write_bls(root: Path, env: jinja2.Environment, ensemble: Ensemble, plan: Plan) -> None:
    spec = ensemble.spec
    members = [
        {
            "name": m.name,
            "input": m.input.name,
            "output": m.output.name,
            "weight": m.weight,
            "max_batch_size": plan.batch_size[m.name],
            **({"url": spec.remote_urls[m.name]} if m.name in spec.remote_urls else {}),
            **({"tls": _tls_files(spec.remote_tls[m.name])} if m.name in spec.remote_tls else {}),
        }
        for m in ensemble.members
    ]
    config = env.get_template("combiner_bls.pbtxt.j2").render(
        name=spec.name,
        input=ensemble.input,
        output=ensemble.output,
        max_batch_size=spec.max_batch_size,
        instances=COMBINER_INSTANCES,
        queue_delay_us=0,
        members=members,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        min_members=spec.min_members or len(members),
        member_timeout_ms=spec.member_timeout_ms or 0,
    )
    version = _model_dir(root, spec.name, config)
    _copy_template(env, "combiner_bls.py", version / "model.py")
    _copy_template(env, "combine.py", version / "combine.py")
    if spec.remote_urls:
        _copy_template(env, "remote.py", version / "remote.py")


def _tls_files(tls: TlsFiles) -> dict[str, str]:
    """tritonclient's TLS options (file paths), as the combiner passes them."""
    return {key: str(path) for key, path in tls.model_dump().items() if path is not None}


def _write_native_ensemble(
    root: Path, env: jinja2.Environment, ensemble: Ensemble, plan: Plan
) -> None:
    spec = ensemble.spec
    step = combine_step_name(ensemble)
    # Triton requires an ensemble's max_batch_size to be at most each of its steps'.
    max_batch = min([spec.max_batch_size, *plan.batch_size.values()])
    common = {
        "name": spec.name,
        "combine_step": step,
        "members": ensemble.members,
        "input": ensemble.input,
        "output": ensemble.output,
        "max_batch_size": max_batch,
    }
    _model_dir(root, spec.name, env.get_template("ensemble.pbtxt.j2").render(**common))
    config = env.get_template("combine_step.pbtxt.j2").render(
        **common,
        instances=1,
        queue_delay_us=0,
        weights=spec.weights,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
    )
    version = _model_dir(root, step, config)
    _copy_template(env, "combine_step.py", version / "model.py")
    _copy_template(env, "combine.py", version / "combine.py")


def combine_step_name(ensemble: Ensemble) -> str:
    return f"{ensemble.spec.name}_combine"


def instance_groups(allocation: dict[str, int], inventory: Inventory) -> list[InstanceGroup]:
    """One instance_group per device: `KIND_GPU` pinned with `gpus`, or `KIND_CPU`."""
    groups = []
    for device_id, count in sorted(allocation.items()):
        if count <= 0:
            continue
        device = inventory[device_id]
        if device.kind == "gpu":
            groups.append(InstanceGroup("KIND_GPU", count, (device.gpu_index,)))
        else:
            groups.append(InstanceGroup("KIND_CPU", count))
    return groups


def _model_dir(root: Path, name: str, config: str) -> Path:
    """Create `root/name/` with its config.pbtxt (checked) and return the version folder."""
    parse_config(config, name)
    model = inside(root, name)
    (model / "1").mkdir(parents=True, mode=0o755)
    (model / "config.pbtxt").write_text(config)
    return model / "1"


def inside(root: Path, *parts: str) -> Path:
    """`root/parts...`, refused unless it resolves to a folder strictly inside `root`: names
    from a plan.json or a spec must never make the build write elsewhere."""
    path = root.joinpath(*parts).resolve()
    if root.resolve() not in path.parents:
        raise RenderError(
            f"{'/'.join(parts)!r} would be written outside the repository folder; {NAME_RULE}"
        )
    return path


def parse_config(text: str, name: str) -> model_config_pb2.ModelConfig:
    """Parse a rendered config.pbtxt as Triton does; a failure is a bug in a template."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RenderError(f"rendered config.pbtxt of {name} does not parse: {exc}") from None
    if config.name != name:
        raise RenderError(f"rendered config.pbtxt of {name} names the model {config.name!r}")
    return config


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = pbtxt_string
    return env


def templates_dir() -> Path:
    """The source checkout's `templates/`, else the copy installed inside the wheel."""
    source = Path(__file__).resolve().parent.parent / "templates"
    if (source / "member.pbtxt.j2").is_file():
        return source
    return Path(str(resources.files("tritongen.templates")))


def pbtxt_string(value: Any) -> str:
    """A protobuf text-format string literal: every quote, backslash and control escaped."""
    out = []
    for char in str(value):
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.extend(f"\\{byte:03o}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def _copy_template(env: jinja2.Environment, name: str, target: Path) -> None:
    shutil.copyfile(templates_dir() / name, target)
    target.chmod(0o644)


def check_destination(destination: Path, force: bool) -> None:
    """Refuse to replace what tritongen did not write. An empty folder, or a repository that
    tritongen wrote (its marker), is replaced; `force` is needed when files were added to
    such a repository since, and a non-empty folder without the marker is refused whatever
    `force` says (`build -o ~ --force` must not remove a home folder)."""
    if not destination.exists():
        return
    if not destination.is_dir():
        raise RenderError(f"{destination}: exists and is not a folder; choose another -o")
    present = sorted(p.name for p in destination.iterdir() if p.name not in KEPT_FILES)
    if not present:
        return
    marker = read_marker(destination)
    if marker is None:
        raise RenderError(
            f"{destination}: is not empty and was not written by tritongen "
            f"(holds {', '.join(present[:3])}); choose another -o (--force replaces only "
            "a folder that tritongen wrote)"
        )
    written = marker.get("entries")
    added = [n for n in present if n != MARKER and n not in written] if written else []
    if added and not force:
        raise RenderError(
            f"{destination}: holds {', '.join(added[:3])}, which tritongen did not write; "
            "move it away, or pass --force to replace the whole folder"
        )


def read_marker(repository: Path) -> dict[str, Any] | None:
    """The `.tritongen` marker of a repository that tritongen wrote; None for any other."""
    try:
        marker = json.loads((repository / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_plan(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    names = {m.name for m in ensemble.members}
    if combine_step_name(ensemble) in names:
        raise SpecError(f"member name {combine_step_name(ensemble)!r} is reserved; rename it")
    for member in ensemble.members:
        if member.name in ensemble.spec.remote_urls:
            continue  # placed by the server at its url
        if not any(n > 0 for n in plan.allocation.get(member.name, {}).values()):
            raise SpecError(f"plan: member {member.name} has no instance; re-run `tritongen plan`")
        if member.name not in plan.batch_size:
            raise SpecError(f"plan: member {member.name} has no batch size")
        for device_id in plan.allocation[member.name]:
            try:
                inventory[device_id]
            except KeyError:
                raise SpecError(
                    f"plan: member {member.name} is placed on {device_id!r}, "
                    "which is not in the device inventory"
                ) from None
    _check_nodes(ensemble, plan, inventory)


def choose_combiner(ensemble: Ensemble, plan: Plan, asked: Combiner | None) -> Combiner:
    """The combiner asked for; by default BLS when a member is served elsewhere."""
    if asked is not None:
        return Combiner(asked)
    remote = ensemble.spec.remote_urls or plan.spans_nodes
    return Combiner.bls if remote else Combiner.ensemble


def _check_remote_members(ensemble: Ensemble, plan: Plan, combiner: Combiner) -> None:
    if combiner is Combiner.bls:
        return
    remote = ensemble.spec.remote_urls
    if remote:
        name = next(iter(remote))
        raise SpecError(
            f"{ensemble.spec.source}: member {name} has a url (served elsewhere); only the BLS "
            "combiner can call it there: build with --combiner bls"
        )
    if plan.spans_nodes:
        name, node = next((m, n) for m, n in plan.nodes.items() if n != plan.primary_node)
        raise SpecError(
            f"plan: member {name} is on node {node}, not on the combiner's node "
            f"{plan.primary_node}; only the BLS combiner calls members on other nodes: "
            "build with --combiner bls or leave --combiner out"
        )


def _check_nodes(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """A multi-node plan names a node for every member, holds each member's instances on
    its node's devices, and serves the combiner on one of its nodes."""
    if not plan.spans_nodes:
        return
    if plan.primary_node not in plan.nodes.values():
        raise SpecError(
            f"plan: primary_node {plan.primary_node!r} serves no member; "
            f"use one of {plan.node_names}"
        )
    for member in ensemble.members:
        node = plan.nodes.get(member.name)
        if node is None:
            raise SpecError(f"plan: member {member.name} has no node; re-run `tritongen plan`")
        for device_id in plan.allocation.get(member.name, {}):
            if inventory[device_id].node != node:
                raise SpecError(
                    f"plan: member {member.name} is on node {node} but placed on {device_id} "
                    f"of node {inventory[device_id].node}; re-run `tritongen plan`"
                )


def _carry_kept_files(destination: Path, staging: Path) -> None:
    for name in KEPT_FILES:
        if (destination / name).is_file():
            shutil.copy2(destination / name, staging / name)


def _swap(staging: Path, destination: Path) -> None:
    """Put `staging` at `destination`; the old tree is removed only once the new one is in."""
    if not destination.exists():
        os.rename(staging, destination)
        return
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    os.rename(destination, retired)
    try:
        os.rename(staging, destination)
    except OSError:
        os.rename(retired, destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)
