"""What one call through the embedded server costs beyond the member's own compute, measured
on this machine: the CPU seconds tritonserver and a Python-backend stub spend per call.

The profile times onnxruntime alone; served, every call also pays the request's trip through
tritonserver and the stub's IPC (semaphores, tensors copied through shared memory). On a CPU
that time comes out of the same cores as the members' compute, so the planner's CPU model
(`tritongen.plan.serving_model`) charges it per call. We measure it with a stand-in member that reads its input
and computes almost nothing (a mean, tiled to the output shape), served alone with one
instance, driven by perf_analyzer at concurrency 1 at batch 1 and at the largest batch (it
takes the ensemble's inputs, so the tensors copied are the ensemble's); the
client passes tensors through system shared memory so that the wire protocol's copies, paid
once per ensemble request rather than per member call, are left out. Two batch sizes give a
fixed cost per call and a cost per sample (the copies). Results are cached per input signature.
The same load served again while the ensemble's own members compute on every core gives how
much more the path costs when it shares the cores with them (`contention`, cached per ensemble).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper

from tritongen.bench.cpu_use import cpu_seconds, per_request
from tritongen.bench.perf import RunQueue, measure
from tritongen.errors import TritongenError
from tritongen.paths import cache_dir
from tritongen.plan.plan import Plan
from tritongen.plan.serving_model import IN_FLIGHT
from tritongen.profile.busy import BusyMembers, Work, busy_jobs, members_busy
from tritongen.profile.concurrency import GPU_MAX_INSTANCES
from tritongen.profile.profile import Profile, ServingCost, default_cost
from tritongen.profile.profiler import profile_ensemble
from tritongen.render.repository import render_repository
from tritongen.serve.server import EmbeddedServer, find_tritonserver, model_counters
from tritongen.spec.devices import Inventory, detect_cpu
from tritongen.spec.ensemble import load_spec
from tritongen.spec.members import Ensemble, TensorSignature, load_ensemble

STAND_IN = "stand_in"
ENSEMBLE = "serving_cost"  # the stand-in as a one-member ensemble
MEASURE_INTERVAL_MS = 1500
CONTENTION_ROUNDS = 2  # idle and busy in turn: a drift of the machine hits both alike
MEMBERS_ALONE_S = 3 * MEASURE_INTERVAL_MS / 1000  # perf_analyzer's three windows
# The slow stand-in's calls last about this long (products of a 128 x 128 matrix, whatever
# the batch): past the time the threads that wait on a call spin before they sleep (a model
# sleeping 0, 2, 8 and 32 ms per call cost tritonserver, its process and the client more CPU
# per call up to 8 ms, and no more at 32)
WAIT_AFTER_S = 0.008
BURN_WIDTH = 128
BURN_PROBE = 8  # products timed first, to size the call
BURN_CALLS = 20  # timed in this process for the call's own CPU and wall


def serving_cost(
    ensemble: Ensemble, inventory: Inventory, *, use_cache: bool = True
) -> ServingCost:
    """The measured cost for this ensemble's input shape, from the cache when it is there;
    the default, saying why, when the embedded server cannot run here."""
    cpu = inventory.cpu
    if cpu is None:
        return default_cost("no CPU in the inventory")
    largest = ensemble.spec.max_batch_size
    try:
        path = _cache_path(ensemble.inputs, largest)
        cost = _read_cache(path) if use_cache else None
        if cost is None:
            cost = measure_serving_cost(ensemble.inputs, ensemble.num_classes, largest, inventory)
            _write_cache(path, cost)
    except TritongenError as exc:
        return default_cost(f"not measured: {exc}")
    try:
        found = members_contention(ensemble, inventory, use_cache)
    except TritongenError:  # the path is then charged as measured on idle cores
        return cost
    return replace(cost, contention=found.path, refill=found.refill)


@dataclass(frozen=True)
class Contention:
    """The path and the members on the same busy cores (docs/SERVING.md)."""

    path: float  # the path's CPU per request beside the members over on idle cores
    refill: float  # the members' extra CPU beside the path, per CPU second the path took


def members_contention(
    ensemble: Ensemble, inventory: Inventory, use_cache: bool = True
) -> Contention:
    """The serving cost's `contention` and `refill` for this ensemble's members, from the
    cache when it is there (per members and input shape)."""
    path = _contention_path(ensemble)
    if use_cache:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = json.loads(path.read_text())
            return Contention(float(cached["contention"]), float(cached["refill"]))
    found = measure_contention(ensemble, inventory)
    _write_json(path, {"contention": found.path, "refill": found.refill})
    return found


def measure_contention(ensemble: Ensemble, inventory: Inventory) -> Contention:
    """CPU per request of the stand-in's path (tritonserver, its process, the client over
    gRPC) at the serving cost's load, with the members computing on every core (`profile.busy`)
    over the same with the cores idle; and the members' CPU per run beside that load over the
    same alone, the extra per CPU second of the path. Idle and busy are taken in turn
    `CONTENTION_ROUNDS` times."""
    largest = ensemble.spec.max_batch_size
    loaded = math.ceil(IN_FLIGHT * largest)
    jobs = busy_jobs(ensemble, largest)
    cores = inventory.cpu.cores if inventory.cpu and inventory.cpu.cores else 1
    idle = busy = extra = path_cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="tritongen-contention-") as tmp:
        repository = _stand_in_repository(
            Path(tmp), ensemble.inputs, ensemble.num_classes, largest, inventory
        )
        with EmbeddedServer(repository) as server:
            for _ in range(CONTENTION_ROUNDS):
                idle += _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded).path
                with members_busy(jobs, cores) as members:
                    alone = _members_alone(members)
                    before = members.work()
                    beside = _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded)
                    extra += members.work().minus(before).extra_cpu_s(alone)
                busy += beside.path
                path_cpu += beside.path * beside.requests
    return Contention(
        busy / idle if idle > 0 else 0.0, max(0.0, extra) / path_cpu if path_cpu > 0 else 0.0
    )


def _members_alone(members: BusyMembers) -> Work:
    """The members' runs and CPU over a window as long as a path measurement's, alone."""
    before = members.work()
    time.sleep(MEMBERS_ALONE_S)
    return members.work().minus(before)


def measure_profile(
    ensemble: Ensemble,
    inventory: Inventory,
    *,
    use_cache: bool = True,
    batch_sizes: Sequence[int] | None = None,
    budget_s: float | None = None,
    profiled: Inventory | None = None,
    gpu_instances: int = GPU_MAX_INSTANCES,
) -> tuple[Profile, ServingCost, float]:
    """What the benchmarks plan from: the serving cost, then every member's profile with it
    (`budget_s`: about how long the profile's timed runs may take; `profiled`: the devices
    members are measured on, all of `inventory` unless given; `gpu_instances`: the most
    instances of a member a GPU's curves try), and the seconds both took."""
    started = time.perf_counter()
    serving = serving_cost(ensemble, inventory, use_cache=use_cache)
    profile = profile_ensemble(
        ensemble, profiled or inventory, batch_sizes=batch_sizes, use_cache=use_cache,
        progress=False, serving=serving, budget_s=budget_s, gpu_instances=gpu_instances,
    )  # fmt: skip
    return profile, serving, time.perf_counter() - started


def measure_serving_cost(
    inputs: Sequence[TensorSignature], num_classes: int, largest: int, inventory: Inventory
) -> ServingCost:
    """Serve the stand-in member and read, per request, tritonserver's CPU and the
    Python-backend process's apart: the server's is paid per request (a batch of requests does
    not share it), the process's per call (a batch shares it) — see docs/SERVING.md."""
    with tempfile.TemporaryDirectory(prefix="tritongen-serving-cost-") as tmp:
        repository = _stand_in_repository(Path(tmp), inputs, num_classes, largest, inventory)
        with EmbeddedServer(repository) as server:
            small = _cpu_per_request(server, STAND_IN, 1, shared_memory="system")
            large = _cpu_per_request(server, STAND_IN, largest, shared_memory="system")
            # Under load tritonserver's threads stay awake: its cost per request is what a
            # served plan pays, and less than one at a time. A busy batcher holds one batch in
            # its call and forms the next meanwhile: IN_FLIGHT batches in flight fill them.
            loaded = math.ceil(IN_FLIGHT * largest)
            local = _cpu_per_request(server, STAND_IN, 1, "system", concurrency=loaded)
            with RunQueue() as run_queue:
                wired = _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded)
            whole = _cpu_per_request(server, ENSEMBLE, 1, None, concurrency=loaded)
            lone = _cpu_per_request(server, ENSEMBLE, 1, None)
        slow = _slow_calls(Path(tmp) / "slow", inputs, num_classes, largest, inventory, wired)
        # The same load without dynamic batching: every request is a call of its own, so what
        # tritonserver spends per call (its side of the IPC) is no longer shared by a batch.
        repository = _stand_in_repository(
            Path(tmp) / "unbatched", inputs, num_classes, largest, inventory, batching=False
        )
        with EmbeddedServer(repository) as server:
            alone = _cpu_per_request(server, STAND_IN, 1, "system", concurrency=loaded)
    steps = max(largest - 1, 1)
    stub_sample = max(0.0, (large.stub - small.stub) / steps)
    server_sample = max(0.0, (large.server - small.server) / steps)
    stub_call = max(0.0, small.stub - stub_sample)
    # A batch of b one-sample requests costs the process more than one request of b samples:
    # each request's tensors are read and its response written apart.
    one_request = stub_call + stub_sample * local.batch
    extra = local.stub * local.batch - one_request
    return ServingCost(
        per_call_s=stub_call,
        per_sample_s=stub_sample + server_sample,
        per_request_s=max(0.0, whole.total - wired.total),
        source="measured",
        wire_s=max(0.0, wired.server - local.server),
        client_s=wired.client,
        request_s=local.server,
        stub_request_s=max(0.0, extra / max(local.batch - 1, 1)),
        server_call_s=_server_call_s(local, alone),
        runnable_per_core=_runnable_per_core(wired, run_queue.mean),
        tail=_tail(wired, loaded),
        path_s=lone.p50_s,
        wait_call_s=slow.call_s,
        client_wait_call_s=slow.client_call_s,
        wait_after_s=slow.after_s,
    )


@dataclass(frozen=True)
class _Waiting:
    """What a long call costs the processes that wait on it, beyond an instant one's."""

    call_s: float  # tritonserver and the Python-backend process, CPU seconds per call
    client_call_s: float  # the client, per call
    after_s: float  # the calls' wall seconds


def _slow_calls(
    root: Path,
    inputs: Sequence[TensorSignature],
    num_classes: int,
    largest: int,
    inventory: Inventory,
    instant: _PerRequest,
) -> _Waiting:
    """The stand-in made slow (its calls compute for milliseconds), at the load `instant` was
    measured at: its CPU per request over the instant stand-in's, less the slow calls' own
    compute (timed in this process), times the requests per call."""
    root.mkdir(parents=True, exist_ok=True)
    _stand_in_onnx(root / "probe.onnx", inputs, num_classes, BURN_PROBE)
    _, probe_s = _burn_seconds(root / "probe.onnx", inputs, largest)
    steps = max(BURN_PROBE, math.ceil(BURN_PROBE * WAIT_AFTER_S / max(probe_s, 1e-6)))
    repository = _stand_in_repository(root, inputs, num_classes, largest, inventory, burn=steps)
    with EmbeddedServer(repository) as server:
        slow = _cpu_per_request(
            server, STAND_IN, 1, None, concurrency=math.ceil(IN_FLIGHT * largest)
        )
    compute_s, wall_s = _burn_seconds(root / "stand_in.onnx", inputs, round(slow.batch))
    waiting = slow.server - instant.server + slow.stub - instant.stub - compute_s / slow.batch
    return _Waiting(
        max(0.0, waiting) * slow.batch,
        max(0.0, slow.client - instant.client) * slow.batch,
        wall_s,
    )


def _burn_seconds(path: Path, inputs: Sequence[TensorSignature], batch: int) -> tuple[float, float]:
    """CPU and wall seconds of one call of the slow stand-in at `batch`, one thread, here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {
        f"input_{i}": np.zeros([max(1, batch), *(d if d > 0 else 1 for d in s.dims)], s.dtype)
        for i, s in enumerate(inputs)
    }
    session.run(None, feed)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(BURN_CALLS):
        session.run(None, feed)
    return (
        (time.process_time() - cpu) / BURN_CALLS,
        (time.perf_counter() - wall) / BURN_CALLS,
    )


def stand_in_cpu(
    inputs: Sequence[TensorSignature],
    num_classes: int,
    largest: int,
    inventory: Inventory,
    concurrencies: Sequence[int],
) -> dict[int, dict[str, float]]:
    """The stand-in over gRPC at each of `concurrencies`: CPU seconds per request of
    tritonserver, its Python-backend process and the client, as the serving cost reads them
    at one load (a benchmark's check of what the load changes)."""
    with tempfile.TemporaryDirectory(prefix="tritongen-serving-cost-") as tmp:
        repository = _stand_in_repository(Path(tmp), inputs, num_classes, largest, inventory)
        with EmbeddedServer(repository) as server:
            found = {
                c: _cpu_per_request(server, STAND_IN, 1, None, concurrency=c) for c in concurrencies
            }
    return {c: {"server": r.server, "models": r.stub, "client": r.client} for c, r in found.items()}


def _tail(loaded: _PerRequest, concurrency: int) -> float:
    """p99 over mean latency under load: Little's law gives the mean, concurrency / rate."""
    if loaded.rate <= 0 or loaded.p99_s <= 0:
        return 0.0
    return loaded.p99_s / (concurrency / loaded.rate)


def _runnable_per_core(loaded: _PerRequest, runnable: float | None) -> float:
    """Threads runnable per core that tritonserver and the client keep busy: the run queue
    under load, less the stand-in's one thread while it computes, over the cores the server
    and the client used."""
    busy = (loaded.server + loaded.client) * loaded.rate
    if runnable is None or busy <= 0:
        return 0.0
    return max(0.0, runnable - min(1.0, loaded.stub * loaded.rate)) / busy


def _server_call_s(batched: _PerRequest, alone: _PerRequest) -> float:
    """tritonserver's CPU per call: per request it pays r + k / B at batch B, so two loads that
    form batches B > 1 and 1 give k = (alone − batched) / (1 − 1/B)."""
    if batched.batch <= 1.0:
        return 0.0
    return max(0.0, (alone.server - batched.server) / (1 - 1 / batched.batch))


@dataclass(frozen=True)
class _PerRequest:
    """CPU seconds one request cost: tritonserver, the Python-backend processes, the client
    (perf_analyzer, its start-up included)."""

    server: float
    stub: float
    client: float
    batch: float = 1.0  # requests per call the batcher formed
    rate: float = 0.0  # requests per second (perf_analyzer's measurement windows)
    p99_s: float = 0.0  # 99th percentile latency (perf_analyzer's)
    p50_s: float = 0.0  # median latency (perf_analyzer's)
    requests: float = 0.0  # requests answered while measured

    @property
    def total(self) -> float:
        return self.server + self.stub

    @property
    def path(self) -> float:
        """Every process on the request's path, the client's included."""
        return self.server + self.stub + self.client


def _cpu_per_request(
    server: EmbeddedServer,
    model: str,
    batch: int,
    shared_memory: str | None,
    concurrency: int = 1,
) -> _PerRequest:
    """CPU per request of `batch` samples to `model`, `concurrency` at a time (at 1 the
    batcher has nothing to merge, so a request is one call)."""
    before = cpu_seconds(server.pid)
    requests_before, calls_before = _requests(server, model), _calls(server, model)
    (point,) = measure(
        server.grpc_url,
        model,
        [concurrency],
        batch_size=batch,
        interval_ms=MEASURE_INTERVAL_MS,
        max_trials=3,
        stability_percent=1000,  # three windows, whatever they show: CPU time is what we read
        shared_memory=shared_memory,
    )
    requests = _requests(server, model) - requests_before
    if requests <= 0:
        raise TritongenError(f"the stand-in {model} answered no request")
    used = per_request(cpu_seconds(server.pid).minus(before), requests)
    calls = _calls(server, model) - calls_before
    return _PerRequest(
        used["server"],
        used["models"],
        used["client"],
        requests / max(calls, 1),
        point.throughput,
        point.p99_ms / 1000,
        point.p50_ms / 1000,
        requests,
    )


def _calls(server: EmbeddedServer, model: str) -> float:
    """Executions (batches) of `model` so far, from Triton's metrics."""
    return model_counters(server.metrics_url).get(("nv_inference_exec_count", model), 0.0)


def _requests(server: EmbeddedServer, model: str) -> float:
    """Requests `model` has answered so far, from Triton's metrics."""
    return model_counters(server.metrics_url).get(("nv_inference_request_success", model), 0.0)


def _stand_in_repository(
    root: Path,
    inputs: Sequence[TensorSignature],
    num_classes: int,
    largest: int,
    inventory: Inventory,
    *,
    batching: bool = True,
    burn: int = 0,
) -> Path:
    """A repository serving the stand-in the way tritongen serves members (Python backend,
    one single-threaded instance, no queue delay; without dynamic batching when not
    `batching`; computing `burn` matrix products per call when given)."""
    root.mkdir(parents=True, exist_ok=True)
    _stand_in_onnx(root / "stand_in.onnx", inputs, num_classes, burn)
    spec_path = root / "stand_in.yaml"
    spec = {
        "name": ENSEMBLE,
        "members": [{"name": STAND_IN, "model": "stand_in.onnx"}],
        "combine": {"rule": "mean", "transform": "none"},
        "max_batch_size": largest,
    }
    spec_path.write_text(yaml.safe_dump(spec))
    ensemble = load_ensemble(load_spec(spec_path))
    cpu = inventory.cpu
    assert cpu is not None
    plan = Plan(
        allocation={STAND_IN: {cpu.id: 1}},
        batch_size={STAND_IN: largest},
        threads={STAND_IN: 1},
        queue_delay_us={STAND_IN: 0},
        dynamic_batching=batching,
    )
    return render_repository(ensemble, plan, inventory, root / "repository", force=True)


def _stand_in_onnx(
    path: Path, inputs: Sequence[TensorSignature], num_classes: int, burn: int = 0
) -> None:
    """Inputs `input_0`, `input_1`... of the given dtypes and dims [N, *dims] → the sum of
    their per-sample means, tiled to [N, num_classes] (float32): it reads every value of every
    input and computes nothing else, but `burn` products of a matrix per call when given."""
    nodes, means = [], []
    for index in range(len(inputs)):
        name = f"input_{index}"
        nodes += [
            helper.make_node("Cast", [name], [f"float_{index}"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", [f"float_{index}", "flat"], [f"rows_{index}"]),
            helper.make_node("ReduceMean", [f"rows_{index}"], [f"mean_{index}"], axes=[1]),
        ]
        means.append(f"mean_{index}")
    nodes.append(helper.make_node("Sum", means, ["total"]))
    burned, weights = _burn_nodes(burn)
    nodes += burned
    nodes.append(helper.make_node("Tile", ["burned" if burn else "total", "repeats"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [
            helper.make_tensor_value_info(
                f"input_{index}",
                helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)),
                ["N", *(d if d > 0 else 1 for d in s.dims)],
            )
            for index, s in enumerate(inputs)
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", num_classes])],
        initializer=[
            helper.make_tensor("flat", TensorProto.INT64, [2], [0, -1]),
            helper.make_tensor("repeats", TensorProto.INT64, [2], [1, num_classes]),
            *weights,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _burn_nodes(steps: int) -> tuple[list[Any], list[Any]]:
    """Nodes that turn `total` into `burned` (the same values) after `steps` products of a
    matrix that depends on the input, so that no optimizer computes them ahead; and their
    initializers."""
    if steps <= 0:
        return [], []
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((BURN_WIDTH, BURN_WIDTH)).astype(np.float32) / BURN_WIDTH**0.5
    nodes = [
        helper.make_node("ReduceMean", ["total"], ["level"], keepdims=0),
        helper.make_node("Add", ["matrix", "level"], ["x_0"]),
    ]
    for step in range(steps):
        nodes += [
            helper.make_node("MatMul", [f"x_{step}", "matrix"], [f"p_{step}"]),
            helper.make_node("Tanh", [f"p_{step}"], [f"x_{step + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceMean", [f"x_{steps}"], ["spent"], keepdims=0),
        helper.make_node("Mul", ["spent", "zero"], ["nothing"]),
        helper.make_node("Add", ["total", "nothing"], ["burned"]),
    ]
    weights = [
        helper.make_tensor("matrix", TensorProto.FLOAT, matrix.shape, matrix.flatten()),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    return nodes, weights


def _contention_path(ensemble: Ensemble) -> Path:
    key = {
        "members": [m.sha256 for m in ensemble.members],
        "serving_cost": _cache_path(ensemble.inputs, ensemble.spec.max_batch_size).name,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "contention" / f"{digest}.json"


def _cache_path(inputs: Sequence[TensorSignature], largest: int) -> Path:
    key = {
        "inputs": [[s.dtype, list(s.dims)] for s in inputs],
        "largest": largest,
        "cpu": detect_cpu().device_class,  # the CPU's model and usable cores
        "tritonserver": str(find_tritonserver().binary.stat().st_mtime),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "serving_cost" / f"{digest}.json"


def _read_cache(path: Path) -> ServingCost | None:
    try:
        data = json.loads(path.read_text())
        return ServingCost(
            float(data["per_call_s"]),
            float(data["per_sample_s"]),
            float(data["per_request_s"]),
            "measured",
            float(data["wire_s"]),
            float(data["client_s"]),
            float(data["request_s"]),
            float(data["stub_request_s"]),
            float(data["server_call_s"]),
            float(data["runnable_per_core"]),
            float(data["tail"]),
            float(data["path_s"]),
            wait_call_s=float(data["wait_call_s"]),
            client_wait_call_s=float(data["client_wait_call_s"]),
            wait_after_s=float(data["wait_after_s"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, cost: ServingCost) -> None:
    _write_json(path, cost.to_json())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` whole or not at all (profiles running at once share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)
