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
Beside the stand-in, a copy of it that sleeps before each call gives what a call that lasts
costs the threads waiting on it, on idle cores and beside the busy members.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
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
WAITS = "stand_in_waits"  # the stand-in, sleeping WAIT_AFTER_S before each call
ENSEMBLE = "serving_cost"  # the stand-in as a one-member ensemble
MEASURE_INTERVAL_MS = 1500
# Idle and busy in turn, so that a drift of the machine hits both alike; three rounds, so
# that the waiting measured beside the members has a median that leaves out one disturbed round
CONTENTION_ROUNDS = 3
MEMBERS_ALONE_S = 3 * MEASURE_INTERVAL_MS / 1000  # perf_analyzer's three windows
# The waiting stand-in sleeps this long per call: past the time the threads that wait on a
# call spin before they sleep (a model sleeping 0, 2, 8 and 32 ms per call cost tritonserver,
# its process and the client more CPU per call up to 8 ms, and no more at 32)
WAIT_AFTER_S = 0.008
# The waiting is a difference of two loads' CPU per request times the requests per call
# (about 16), so one disturbed window moves it by a millisecond: the median of rounds is kept
WAITING_ROUNDS = 3


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
    return replace(
        cost,
        contention=found.path,
        refill=found.refill,
        busy_wait_call_s=found.waiting.call_s,
        busy_client_wait_call_s=found.waiting.client_call_s,
    )


@dataclass(frozen=True)
class Waiting:
    """What a call of `WAIT_AFTER_S` costs the processes that wait on it, beyond an instant
    one's, CPU seconds per call."""

    call_s: float  # tritonserver and the Python-backend process
    client_call_s: float  # the client


@dataclass(frozen=True)
class Contention:
    """The path and the members on the same busy cores (docs/SERVING.md)."""

    path: float  # the path's CPU per request beside the members over on idle cores
    refill: float  # the members' extra CPU beside the path, per CPU second the path took
    waiting: Waiting  # a long call's waiting beside the members


def members_contention(
    ensemble: Ensemble, inventory: Inventory, use_cache: bool = True
) -> Contention:
    """The serving cost's `contention` and `refill` for this ensemble's members, from the
    cache when it is there (per members and input shape)."""
    path = _contention_path(ensemble)
    if use_cache:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = json.loads(path.read_text())
            waiting = Waiting(float(cached["wait_call_s"]), float(cached["client_wait_call_s"]))
            return Contention(float(cached["contention"]), float(cached["refill"]), waiting)
    found = measure_contention(ensemble, inventory)
    _write_json(
        path,
        {
            "contention": found.path,
            "refill": found.refill,
            "wait_call_s": found.waiting.call_s,
            "client_wait_call_s": found.waiting.client_call_s,
        },
    )
    return found


def measure_contention(ensemble: Ensemble, inventory: Inventory) -> Contention:
    """CPU per request of the stand-in's path (tritonserver, its process, the client over
    gRPC) at the serving cost's load, with the members computing on every core (`profile.busy`)
    over the same with the cores idle; the members' CPU per run beside that load over the
    same alone, the extra per CPU second of the path; and, beside the members, what a long
    call's waiting costs (the waiting stand-in's rounds). Idle and busy are taken in turn
    `CONTENTION_ROUNDS` times."""
    largest = ensemble.spec.max_batch_size
    loaded = math.ceil(IN_FLIGHT * largest)
    jobs = busy_jobs(ensemble, largest)
    cores = inventory.cpu.cores if inventory.cpu and inventory.cpu.cores else 1
    idle = busy = extra = path_cpu = 0.0
    rounds: list[Waiting] = []
    with tempfile.TemporaryDirectory(prefix="tritongen-contention-") as tmp:
        repository = _stand_in_repository(
            Path(tmp), ensemble.inputs, ensemble.num_classes, largest, inventory, waits=True
        )
        with EmbeddedServer(repository) as server:
            for _ in range(CONTENTION_ROUNDS):
                idle += _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded).path
                with members_busy(jobs, cores) as members:
                    alone = _members_alone(members)
                    before = members.work()
                    beside = _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded)
                    extra += members.work().minus(before).extra_cpu_s(alone)
                    rounds.append(_waiting_round(server, beside, loaded))
                busy += beside.path
                path_cpu += beside.path * beside.requests
    return Contention(
        busy / idle if idle > 0 else 0.0,
        max(0.0, extra) / path_cpu if path_cpu > 0 else 0.0,
        _median(rounds),
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
        repository = _stand_in_repository(
            Path(tmp), inputs, num_classes, largest, inventory, waits=True
        )
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
            waiting = _waiting(server, wired, loaded)
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
        wait_call_s=waiting.call_s,
        client_wait_call_s=waiting.client_call_s,
        wait_after_s=WAIT_AFTER_S,
    )


def _waiting(server: EmbeddedServer, instant: _PerRequest, loaded: int) -> Waiting:
    """The median over `WAITING_ROUNDS` rounds of the waiting stand-in against the instant one
    at the same load, taken in turn (`instant`: the first round's, already measured)."""
    rounds = [_waiting_round(server, instant, loaded)]
    for _ in range(WAITING_ROUNDS - 1):
        instant = _cpu_per_request(server, STAND_IN, 1, None, concurrency=loaded)
        rounds.append(_waiting_round(server, instant, loaded))
    return _median(rounds)


def _waiting_round(server: EmbeddedServer, instant: _PerRequest, loaded: int) -> Waiting:
    """The waiting stand-in over gRPC at `loaded` in flight: its CPU per request over the
    instant stand-in's (`instant`, measured just before at that load) times the requests per
    call. Its calls sleep, so nothing of their own is in the difference: only what the
    threads waiting on them spent."""
    slow = _cpu_per_request(server, WAITS, 1, None, concurrency=loaded)
    return Waiting(
        max(0.0, slow.total - instant.total) * slow.batch,
        max(0.0, slow.client - instant.client) * slow.batch,
    )


def _median(rounds: Sequence[Waiting]) -> Waiting:
    return Waiting(
        statistics.median(r.call_s for r in rounds),
        statistics.median(r.client_call_s for r in rounds),
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
    waits: bool = False,
) -> Path:
    """A repository serving the stand-in the way tritongen serves members (Python backend,
    one single-threaded instance, no queue delay; without dynamic batching when not
    `batching`), and the waiting stand-in beside it when `waits`."""
    root.mkdir(parents=True, exist_ok=True)
    _stand_in_onnx(root / "stand_in.onnx", inputs, num_classes)
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
    repository = render_repository(ensemble, plan, inventory, root / "repository", force=True)
    if waits:
        _add_waiting_stand_in(repository)
    return repository


# The waiting stand-in's model.py: the rendered member's own code, run after a sleep
WAITING_MODEL = """\
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from member import TritonPythonModel as Member


class TritonPythonModel(Member):
    def execute(self, requests):
        time.sleep({wait_s})
        return super().execute(requests)
"""


def _add_waiting_stand_in(repository: Path) -> None:
    """A copy of the rendered stand-in, named `WAITS`, whose calls sleep `WAIT_AFTER_S` before
    they run the member's code: the same path, the same tensors, calls that last, and no CPU
    of their own to subtract."""
    folder = repository / WAITS
    shutil.copytree(repository / STAND_IN, folder)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{STAND_IN}"', f'name: "{WAITS}"', 1))
    code = folder / "1"
    (code / "model.py").rename(code / "member.py")
    (code / "model.py").write_text(WAITING_MODEL.format(wait_s=WAIT_AFTER_S))


def _stand_in_onnx(path: Path, inputs: Sequence[TensorSignature], num_classes: int) -> None:
    """Inputs `input_0`, `input_1`... of the given dtypes and dims [N, *dims] → the sum of
    their per-sample means, tiled to [N, num_classes] (float32): it reads every value of every
    input and computes nothing else."""
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
    nodes.append(helper.make_node("Tile", ["total", "repeats"], ["y"]))
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
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


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
        "waiting": "sleeping stand-in",  # how the waiting is measured: no other way's entry
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
