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
import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritongen.errors import RenderError, SpecError
from tritongen.plan.plan import Plan
from tritongen.spec.devices import Inventory
from tritongen.spec.ensemble import NAME_RULE, Accelerator, ExecutionSpec, TlsFiles
from tritongen.spec.members import Ensemble, MemberModel

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"  # a member served by torch (runtime: torch)
MARKER = ".tritongen"
NODES_DIR = "nodes"  # DIR/nodes/<node>/: one repository per node of a multi-node plan
KEPT_FILES = ("README.md",)  # carried over from the destination (the folder's own README)
COMBINER_INSTANCES = 2  # an async BLS instance moves one batch at a time: keep two in flight
# Where TensorRT keeps built engines so that a restart skips the build; docker-compose.yml and
# the Kubernetes manifests mount a volume here.
TRT_CACHE_DIR = "/var/cache/trt-engines"
WARMUP_DIR = "warmup"  # Triton reads model_warmup's input_data_file from <model>/warmup/


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
    warmup: bool = True,
) -> Path:
    """Write the repository for `ensemble` laid out by `plan` into `destination`.

    `combiner` None chooses: BLS when some member is served elsewhere (a spec `url`, or
    another node of the plan), else Triton's ensemble. `warmup` gives every member a
    `model_warmup` at its planned batch sizes, run before the server reports ready (off only
    to measure what it saves)."""
    destination = Path(destination).resolve()
    check_destination(destination, force)
    chosen = choose_combiner(ensemble, plan, combiner)
    _check_remote_members(ensemble, plan, chosen)
    _check_plan(ensemble, plan, inventory)
    _check_runtimes(ensemble, Target(target))
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        _write_all(staging, ensemble, plan, inventory, chosen, Target(target), warmup)
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
    warmup: bool,
) -> None:
    env = _environment()
    marker: dict[str, Any] = {
        "ensemble": ensemble.spec.name,
        "combiner": combiner.value,
        "target": target.value,
    }
    if plan.spans_nodes:
        _write_nodes(root, env, ensemble, plan, inventory, target, warmup)
        marker |= {"nodes": plan.node_names, "primary_node": plan.primary_node}
    else:
        _write_repository(root, env, ensemble, plan, inventory, combiner, target, warmup)
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
    warmup: bool,
) -> None:
    """The members served here (those without a url), alone or in groups, and the combiner
    (none when one group holds every member: that group combines)."""
    remote = ensemble.spec.remote_urls
    for member in ensemble.members:
        if member.name not in remote and plan.group_of(member.name) is None:
            _write_member(root, env, ensemble, member, plan, inventory, target, warmup)
    for name in plan.groups:
        _write_group(root, env, ensemble, plan, name, inventory, warmup)
    if combining_group(ensemble, plan) is not None:
        return
    if combiner is Combiner.bls:
        _write_bls(root, env, ensemble, plan)
    else:
        _write_native_ensemble(root, env, ensemble, plan, warmup)


def combining_group(ensemble: Ensemble, plan: Plan) -> str | None:
    """The group that holds every member, which is then the served ensemble; else None."""
    everyone = {m.name for m in ensemble.members}
    return next((n for n, g in plan.groups.items() if set(g.members) == everyone), None)


def group_model_name(ensemble: Ensemble, plan: Plan, group: str) -> str:
    """The served name of a group: the ensemble's when it combines, else `<ensemble>_<group>`."""
    if combining_group(ensemble, plan) == group:
        return ensemble.spec.name
    return f"{ensemble.spec.name}_{group}"


def group_output(member: str) -> str:
    """The output under which a group that does not combine returns one member's rows."""
    return f"OUT_{member}"


def _write_group(
    root: Path,
    env: jinja2.Environment,
    ensemble: Ensemble,
    plan: Plan,
    name: str,
    inventory: Inventory,
    warmup: bool,
) -> None:
    """One Python-backend model running `plan.groups[name]`'s members on every batch: it takes
    the ensemble's inputs and returns the combined output (it holds every member) or each
    member's output under `group_output`."""
    group = plan.groups[name]
    members = [m for m in ensemble.members if m.name in group.members]
    combines = len(members) == len(ensemble.members)
    model_name = group_model_name(ensemble, plan, name)
    spec = ensemble.spec
    config = env.get_template("group.pbtxt.j2").render(
        ensemble_name=spec.name,
        name=model_name,
        combines=combines,
        members=[_group_member(m, plan) for m in members],
        inputs=ensemble.inputs,
        output=ensemble.output,
        max_batch_size=served_max_batch(ensemble),
        instance_groups=instance_groups(group.allocation, inventory),
        preferred_batch_sizes=[group.batch_size] if group.batch_size > 1 else [],
        queue_delay_us=group.queue_delay_us,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        threads=group.threads,
        parallel_members=group.parallel_members,
        warmup_batches=sorted({1, group.batch_size}) if warmup else [],
    )
    version = _model_dir(root, model_name, config)
    for member in members:
        _copy_model(member, version / member.name)
    if warmup:
        samples = ensemble.sample_inputs(1)
        _write_warmup_data(
            [samples[i.name][0] for i in ensemble.inputs], root / model_name / WARMUP_DIR
        )
    _copy_template(env, "group_model.py", version / "model.py")
    _copy_template(env, "combine.py", version / "combine.py")
    _copy_template(env, "sessions.py", version / "sessions.py")


def _group_member(member: MemberModel, plan: Plan) -> dict[str, Any]:
    """What the group's model.py needs of one member (its `members` parameter)."""
    return {
        "name": member.name,
        "file": f"{member.name}/{served_file_name(member)}",
        "runtime": member.runtime,
        "output_index": member.output_index,
        # member input -> the group's (combined) input, in the order the member takes them
        "inputs": dict(member.input_map),
        "output": member.output.name,
        "served_as": group_output(member.name),
        "batch_size": plan.batch_size[member.name],
        "weight": member.weight,
        "triton_type": member.output.triton_type,
        "dims": list(member.output.dims),
    }


def served_max_batch(ensemble: Ensemble) -> int:
    """The largest request the served ensemble accepts: the spec's, or less where a member's
    ONNX file fixes its batch dimension. The plan's batch sizes go to the batchers, never here."""
    limits = [m.max_batch_limit for m in ensemble.members if m.max_batch_limit]
    return min([ensemble.spec.max_batch_size, *limits])


def _write_nodes(
    root: Path,
    env: jinja2.Environment,
    ensemble: Ensemble,
    plan: Plan,
    inventory: Inventory,
    target: Target,
    warmup: bool,
) -> None:
    """`nodes/<primary>/`: the BLS combiner and the primary's members, calling the others at
    their node's url; `nodes/<other>/`: that node's members alone."""
    for node in plan.node_names:
        folder = inside(root, NODES_DIR, node)
        folder.mkdir(parents=True)
        if node == plan.primary_node:
            calling = calling_other_nodes(ensemble, plan, inventory)
            _write_repository(folder, env, calling, plan, inventory, Combiner.bls, target, warmup)
            continue
        for member in ensemble.members:
            if plan.nodes[member.name] == node and member.name not in ensemble.spec.remote_urls:
                _write_member(folder, env, ensemble, member, plan, inventory, target, warmup)


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
    warmup: bool,
) -> None:
    batch = plan.batch_size[member.name]
    groups = instance_groups(plan.allocation[member.name], inventory)
    config = env.get_template("member.pbtxt.j2").render(
        ensemble_name=ensemble.spec.name,
        member=member,
        target=target.value,
        batch_size=served_max_batch(ensemble),
        warmup_batches=warmup_batches(member, batch) if warmup else [],
        instance_groups=groups,
        tensorrt=_tensorrt_parameters(ensemble.spec.execution_of(member.name), groups, target),
        preferred_batch_sizes=[batch] if batch > 1 else [],
        queue_delay_us=plan.queue_delay_us.get(member.name, 0),
        dynamic_batching=plan.dynamic_batching,
        threads=plan.threads.get(member.name, 1),
        served_file=served_file_name(member),
    )
    version = _model_dir(root, member.name, config)
    _copy_model(member, version, torchscript=target is Target.embedded)
    if warmup:
        rng = np.random.default_rng(0)
        samples = [
            ensemble.member_fill(member, s.name).sample(rng, s.dtype, s.dims) for s in member.inputs
        ]
        _write_warmup_data(samples, root / member.name / WARMUP_DIR)
    if target is Target.embedded:
        _copy_template(env, "member_model.py", version / "model.py")
        _copy_template(env, "sessions.py", version / "sessions.py")


def _check_runtimes(ensemble: Ensemble, target: Target) -> None:
    """The NGC image runs members on its native onnxruntime backend: a member whose ONNX
    export was not checked against torch (runtime: torch) must not be served from it."""
    by_torch = [m.name for m in ensemble.members if m.torchscript is not None]
    if target is Target.docker and by_torch:
        raise RenderError(
            f"members {', '.join(by_torch)} are served by torch (runtime: torch), which "
            "--target docker does not render; drop `runtime: torch` from them for that target"
        )


def served_file_name(member: MemberModel) -> str:
    """The file a Python-backend instance runs: the TorchScript of a member served by torch."""
    return TORCHSCRIPT_FILE if member.torchscript is not None else ONNX_FILE


def _copy_model(member: MemberModel, folder: Path, torchscript: bool = True) -> None:
    """`folder/model.onnx`, and its external data files at the same places relative to it;
    and `folder/model.pt` for a member served by torch (not for Triton's native backends)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(member.path, folder / ONNX_FILE)
    if torchscript and member.torchscript is not None:
        shutil.copyfile(member.torchscript, folder / TORCHSCRIPT_FILE)
    for location in member.external_data:
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(member.path.parent / location, target)


def warmup_batches(member: MemberModel, batch: int) -> list[int]:
    """1 (a lone request) and the planned batch; a model with a fixed batch runs only that."""
    return [batch] if member.max_batch_limit is not None else sorted({1, batch})


def warmup_file(index: int) -> str:
    return f"input_{index}"


def _write_warmup_data(samples: list[np.ndarray], folder: Path) -> None:
    """One sample per input, raw and row-major (Triton repeats it for each row), holding the
    values tritongen feeds that input: ones for an attention mask, not NaN-making zeros."""
    folder.mkdir()
    for index, sample in enumerate(samples):
        (folder / warmup_file(index)).write_bytes(np.ascontiguousarray(sample).tobytes())


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
    _check_remote_inputs(ensemble)
    members = [
        {
            "name": m.name,
            "inputs": dict(m.input_map),  # member input -> combined input
            "input": m.inputs[0].name,  # a remote member's one input (remote.py)
            "output": m.output.name,
            "weight": m.weight,
            "max_batch_size": served_max_batch(ensemble),
            **({"url": spec.remote_urls[m.name]} if m.name in spec.remote_urls else {}),
            **({"tls": _tls_files(spec.remote_tls[m.name])} if m.name in spec.remote_tls else {}),
        }
        for m in ensemble.members
    ]
    config = env.get_template("combiner_bls.pbtxt.j2").render(
        name=spec.name,
        inputs=ensemble.inputs,
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


def _check_remote_inputs(ensemble: Ensemble) -> None:
    """The call to a member on another server (templates/remote.py) sends one tensor."""
    for member in ensemble.members:
        if member.name in ensemble.spec.remote_urls and len(member.inputs) > 1:
            raise SpecError(
                f"{ensemble.spec.source}: member {member.name} takes {len(member.inputs)} "
                "inputs and is served on another server; members with several inputs must be "
                "served beside the combiner for now (give no url, or plan for one node)"
            )


def _tls_files(tls: TlsFiles) -> dict[str, str]:
    """tritonclient's TLS options (file paths), as the combiner passes them."""
    return {key: str(path) for key, path in tls.model_dump().items() if path is not None}


def _write_native_ensemble(
    root: Path, env: jinja2.Environment, ensemble: Ensemble, plan: Plan, warmup: bool
) -> None:
    spec = ensemble.spec
    step = combine_step_name(ensemble)
    common = {
        "name": spec.name,
        "combine_step": step,
        "members": ensemble.members,
        "inputs": ensemble.inputs,
        "steps": _ensemble_steps(ensemble, plan),
        "output": ensemble.output,
        "max_batch_size": served_max_batch(ensemble),
    }
    _model_dir(root, spec.name, env.get_template("ensemble.pbtxt.j2").render(**common))
    config = env.get_template("combine_step.pbtxt.j2").render(
        **common,
        instances=1,
        queue_delay_us=0,
        weights=spec.weights,
        rule=spec.combine.rule.value,
        transform=spec.combine.transform.value,
        # zeros: the step only combines; Triton needs every dim known to make them
        warmup_batches=sorted({1, served_max_batch(ensemble)})
        if warmup and _static_outputs(ensemble)
        else [],
    )
    version = _model_dir(root, step, config)
    _copy_template(env, "combine_step.py", version / "model.py")
    _copy_template(env, "combine.py", version / "combine.py")


def _static_outputs(ensemble: Ensemble) -> bool:
    return all(d > 0 for m in ensemble.members for d in m.output.dims)


def _ensemble_steps(ensemble: Ensemble, plan: Plan) -> list[dict[str, Any]]:
    """The scheduler's member steps: one per member served alone, one per group (mapping each
    of its members' outputs); `member_<i>` is member i's output, in spec order."""
    index = {m.name: i for i, m in enumerate(ensemble.members)}
    steps = [
        {
            "model": m.name,
            "inputs": dict(m.input_map),
            "outputs": {m.output.name: f"member_{index[m.name]}"},
        }
        for m in ensemble.members
        if plan.group_of(m.name) is None
    ]
    served_inputs = {i.name: i.name for i in ensemble.inputs}
    for name, group in plan.groups.items():
        outputs = {group_output(m): f"member_{index[m]}" for m in group.members}
        model = group_model_name(ensemble, plan, name)
        steps.append({"model": model, "inputs": served_inputs, "outputs": outputs})
    return steps


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
    _check_groups(ensemble, plan, inventory)
    _check_nodes(ensemble, plan, inventory)


def choose_combiner(ensemble: Ensemble, plan: Plan, asked: Combiner | None) -> Combiner:
    """The combiner asked for; by default BLS when a member is served elsewhere."""
    if asked is not None:
        return Combiner(asked)
    remote = ensemble.spec.remote_urls or plan.spans_nodes
    return Combiner.bls if remote else Combiner.ensemble


def _check_remote_members(ensemble: Ensemble, plan: Plan, combiner: Combiner) -> None:
    if combiner is Combiner.bls:
        _check_bls_groups(ensemble, plan)
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


def _check_bls_groups(ensemble: Ensemble, plan: Plan) -> None:
    """The BLS combiner calls members one by one: it cannot call co-located members."""
    if not plan.groups:
        return
    shape = "every member in one model" if combining_group(ensemble, plan) else "grouped members"
    raise SpecError(
        f"plan: serves {shape} (groups: {', '.join(plan.groups)}); the BLS combiner needs "
        "members served alone: plan with --shape separate, or leave out --combiner bls"
    )


def _check_groups(ensemble: Ensemble, plan: Plan, inventory: Inventory) -> None:
    """Each grouped member is a member of the spec, in one group only, served here."""
    names = {m.name for m in ensemble.members}
    seen: set[str] = set()
    for name, group in plan.groups.items():
        for member in group.members:
            if member not in names or member in seen or member in ensemble.spec.remote_urls:
                raise SpecError(
                    f"plan: group {name} lists {member!r}, which is not a member served here "
                    "or is in another group too; re-run `tritongen plan`"
                )
            seen.add(member)
        if not any(n > 0 for n in group.allocation.values()) or group.batch_size < 1:
            raise SpecError(f"plan: group {name} has no instance or no batch size")
        unknown = [d for d in group.allocation if d not in {x.id for x in inventory.devices}]
        if unknown:
            raise SpecError(f"plan: group {name} is placed on {unknown[0]!r}, not in the inventory")


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
