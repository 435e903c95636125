"""The profile (`profile.json`): how fast one instance of each member runs and how much
memory it takes, per device class and batch size, and what serving adds to that compute.
`tritongen.profile.profiler` measures it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tritongen.files import read_json, validate
from tritongen.spec.devices import CPU_ALIAS, DeviceClass, is_cpu_class
from tritongen.spec.ensemble import Name

PROFILE_VERSION = 1


@dataclass(frozen=True)
class ServingCost:
    per_call_s: float  # the Python-backend process's CPU per call, whatever its batch
    per_sample_s: float  # and per sample in it (tensor copies, both processes)
    per_request_s: float  # once per ensemble request: the scheduler and the combine step
    source: str  # "measured" or why the default is used
    wire_s: float = 0.0  # more for a request that arrives over gRPC (not an internal one)
    client_s: float = 0.0  # a load generator on the same machine (perf_analyzer), per request
    request_s: float = 0.0  # tritonserver, per request to each model (a batch does not share it)
    stub_request_s: float = (
        0.0  # the Python-backend process, per request beyond the first in a call
    )
    server_call_s: float = 0.0  # tritonserver, per call to a Python-backend model (its IPC side)
    # Threads runnable per core's worth of tritonserver's and the client's CPU use, under load
    # (0: not measured); with the units' busy threads, how much slower every call runs.
    runnable_per_core: float = 0.0
    # p99 over mean latency of the stand-in's requests under load (0: not measured): its calls
    # compute nothing, so this is the tail of the server's path alone (docs/SERVING.md)
    tail: float = 0.0
    # Wall seconds of one request alone through the ensemble over gRPC with a member that
    # computes nothing: the hops between processes (a thread woken at each) that CPU seconds
    # leave out (0: not measured; a lone request is then charged its CPU alone)
    path_s: float = 0.0
    # CPU per request of the path (tritonserver, the Python-backend process, the client) at the
    # load above with the ensemble's members computing on every core, over the same on idle
    # cores (0: not measured): their work takes the caches the path's threads come back to
    contention: float = 0.0
    # The members' CPU per run beside that load over alone, the extra per CPU second the path
    # took (0: not measured): the path's time slices take the caches the members come back to,
    # so a CPU second of the path costs the machine 1 + refill seconds
    refill: float = 0.0
    # More CPU per call when a call lasts (tritonserver's, the Python-backend process's; the
    # client's apart), measured with a stand-in whose calls take `wait_after_s`: the threads
    # that wait on a call spin before they sleep, so a long call costs them more than the
    # stand-in's instant ones (0: not measured)
    wait_call_s: float = 0.0
    client_wait_call_s: float = 0.0
    wait_after_s: float = 0.0
    # The same waiting measured with the members busy on every core (None: not measured):
    # waiting threads that spin yield to the members' compute, so they spend less than on
    # idle cores, and `contention` (measured on instant calls) does not say how much
    busy_wait_call_s: float | None = None
    busy_client_wait_call_s: float | None = None

    def under_load(self) -> ServingCost:
        """The CPU seconds charged while the members compute on the same cores: every per-call,
        per-sample and per-request figure times the measured `contention`, and the waiting as
        measured beside the busy members where it was."""
        if self.contention <= 0:
            return self
        scaled = {name: getattr(self, name) * self.contention for name in _PATH_CPU}
        if self.busy_wait_call_s is not None and self.busy_client_wait_call_s is not None:
            scaled |= {
                "wait_call_s": self.busy_wait_call_s,
                "client_wait_call_s": self.busy_client_wait_call_s,
            }
        return replace(self, **scaled)

    def call_s(self, batch: float) -> float:
        """CPU seconds one served call of `batch` samples adds to the member's compute."""
        return self.per_call_s + self.per_sample_s * batch

    def to_json(self) -> dict[str, float | str]:
        return asdict(self)

    def warning(self) -> str | None:
        """One line saying what was assumed, when this cost was not measured."""
        if self.source == "measured":
            return None
        return (
            f"serving cost {self.source}; assumed {1000 * self.per_call_s:.3f} ms CPU per call, "
            f"{1000 * self.per_sample_s:.4f} ms per sample, {1000 * self.per_request_s:.3f} ms "
            "per ensemble request: predictions leave out what serving costs"
        )

    def describe(self) -> str:
        ms = {
            k: f"{1000 * v:.3f} ms"
            for k, v in asdict(self).items()
            if k != "source" and v is not None
        }
        return (
            f"serving cost ({self.source}): per request {ms['request_s']} in tritonserver "
            f"(+{ms['wire_s']} over gRPC), per call {ms['per_call_s']} in the Python backend "
            f"and {ms['server_call_s']} in tritonserver, "
            f"{ms['per_sample_s']} per sample; {ms['per_request_s']} per request through the "
            f"ensemble scheduler; {ms['client_s']} per request for perf_analyzer on this machine; "
            f"{self.runnable_per_core:.1f} threads runnable per core the server and client use; "
            f"p99 {self.tail:.2f}x the mean latency under load; {ms['path_s']} for a request "
            f"alone through the ensemble; the path's CPU {self.contention:.2f}x with the members "
            f"busy on every core, and {self.refill:.2f} s more of the members' per second of it; "
            f"{ms['wait_call_s']} more per call (+{ms['client_wait_call_s']} the client's) for "
            f"calls of {ms['wait_after_s']}{self._busy_waiting()}"
        )

    def _busy_waiting(self) -> str:
        if self.busy_wait_call_s is None or self.busy_client_wait_call_s is None:
            return ""
        return (
            f", {1000 * self.busy_wait_call_s:.3f} ms (+{1000 * self.busy_client_wait_call_s:.3f}"
            " ms) with the members busy"
        )


_PATH_CPU = (
    "per_call_s",
    "per_sample_s",
    "per_request_s",
    "wire_s",
    "client_s",
    "request_s",
    "stub_request_s",
    "server_call_s",
    "wait_call_s",
    "client_wait_call_s",
)


def default_cost(reason: str) -> ServingCost:
    """No serving cost: nothing was measured, and no figure chosen elsewhere stands for it."""
    return ServingCost(0.0, 0.0, 0.0, f"not charged ({reason})")


@dataclass(frozen=True)
class ProfileEntry:
    throughput: float  # samples/s of ONE instance alone on one device of the class
    memory_bytes: int  # memory that instance takes at this batch size
    extra: dict[str, Any] = field(default_factory=dict)  # threads, latency percentiles, spread...

    def to_json(self) -> dict[str, Any]:
        return {"throughput": self.throughput, "memory_bytes": self.memory_bytes, **self.extra}


@dataclass(frozen=True)
class Profile:
    # member -> device class -> batch size -> entry
    members: dict[str, dict[str, dict[int, ProfileEntry]]]
    extra: dict[str, Any] = field(default_factory=dict)

    def entries(self, member: str, device_class: str) -> dict[int, ProfileEntry]:
        """The member's entries for `device_class`. For a CPU, a plain `cpu` on either side
        (a hand-written profile or DEVICES.json) stands for the one CPU class of the other."""
        by_class = self.members.get(member, {})
        if device_class in by_class or not is_cpu_class(device_class):
            return by_class.get(device_class, {})
        cpus = [c for c in by_class if is_cpu_class(c)]
        if CPU_ALIAS in cpus:
            return by_class[CPU_ALIAS]
        if device_class == CPU_ALIAS and len(cpus) == 1:
            return by_class[cpus[0]]
        return {}

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """[{member, device_class, batch, reason}] for what could not be measured."""
        return list(self.extra.get("skipped", []))

    @property
    def serving_cost(self) -> ServingCost:
        """What serving adds to the members' compute (measured by `serving_cost`, else the
        default); profiles from other tools carry none."""
        data = self.extra.get("serving_cost")
        if not isinstance(data, dict):
            return default_cost("the profile carries no serving_cost")
        try:
            return ServingCost(**data)
        except TypeError:
            return default_cost("the profile's serving_cost is malformed")

    @property
    def notes(self) -> list[str]:
        """What the profiler assumed while measuring (dynamic dims, fewer cores), one line each."""
        return [str(n) for n in self.extra.get("warnings", []) if isinstance(n, str)]

    @property
    def warnings(self) -> list[str]:
        """What was assumed because something could not be measured, one line each."""
        cost = self.serving_cost.warning()
        return [*self.notes, *([cost] if cost else [])]

    @property
    def cpu_cost_s_per_sample(self) -> dict[str, float]:
        return dict(self.extra.get("cpu_cost_s_per_sample", {}))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "members": {
                m: {
                    c: {str(b): e.to_json() for b, e in sorted(by_b.items())}
                    for c, by_b in by_c.items()
                }
                for m, by_c in self.members.items()
            },
            **self.extra,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        """A profile from an already validated document (see `load_profile`)."""
        members = {
            m: {c: {int(b): _entry(e) for b, e in by_b.items()} for c, by_b in by_c.items()}
            for m, by_c in data["members"].items()
        }
        extra = {k: v for k, v in data.items() if k not in {"version", "members"}}
        return cls(members=members, extra=extra)


def _entry(data: dict[str, Any]) -> ProfileEntry:
    extra = {k: v for k, v in data.items() if k not in {"throughput", "memory_bytes"}}
    return ProfileEntry(float(data["throughput"]), int(data["memory_bytes"]), extra)


Finite = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Bytes = Annotated[int, Field(strict=True, ge=0, le=2**60)]
BatchKey = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,5}$")]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # what other tools add is kept, not checked


class _EntryFile(_Open):
    throughput: Finite
    memory_bytes: Bytes
    threads: Annotated[int, Field(strict=True, ge=1)] | None = None
    latency_ms: Finite | None = None
    spread: Finite | None = None
    cpu_cost_s_per_sample: Positive | None = None
    throughput_by_threads: dict[BatchKey, Positive] | None = None
    concurrency: dict[BatchKey, Positive] | None = None  # instances together -> samples/s
    lone_latency_s_by_threads: dict[BatchKey, Positive] | None = None  # threads -> seconds
    lone_latency_s_in_group: Positive | None = None  # its call in a lone request's group
    cpu_cost_s_per_sample_in_group: Positive | None = None  # in a busy group's rotation


class _ServingCostFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_call_s: Finite
    per_sample_s: Finite
    per_request_s: Finite
    source: str
    wire_s: Finite = 0.0
    client_s: Finite = 0.0
    request_s: Finite = 0.0
    stub_request_s: Finite = 0.0
    server_call_s: Finite = 0.0
    runnable_per_core: Finite = 0.0
    tail: Finite = 0.0
    path_s: Finite = 0.0
    contention: Finite = 0.0
    refill: Finite = 0.0
    wait_call_s: Finite = 0.0
    client_wait_call_s: Finite = 0.0
    wait_after_s: Finite = 0.0
    busy_wait_call_s: Finite | None = None
    busy_client_wait_call_s: Finite | None = None


class _SkippedFile(_Open):
    member: str
    device_class: str
    batch: int | None = None
    reason: str


class _ProfileFile(_Open):
    """profile.json, checked by type and range where tritongen reads it."""

    version: int = PROFILE_VERSION
    members: dict[Name, dict[DeviceClass, dict[BatchKey, _EntryFile]]]
    serving_cost: _ServingCostFile | None = None
    cpu_cost_s_per_sample: dict[Name, Positive] = Field(default_factory=dict)
    skipped: list[_SkippedFile] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    data = read_json(path, "create it with `tritongen profile`")
    validate(_ProfileFile, data, path)
    return Profile.from_json(data)
