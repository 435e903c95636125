"""The profile (`profile.json`): how fast one instance of each member runs and how much
memory it takes, per device class and batch size, and what serving adds to that compute.
`tritongen.profile.profiler` measures it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritongen.errors import SpecError

PROFILE_VERSION = 1
# Used when nothing was measured (a profile read from an older file, or no embedded server):
# what this project's 2-core machine showed.
DEFAULT_PER_CALL_S = 0.0005


@dataclass(frozen=True)
class ServingCost:
    per_call_s: float  # CPU seconds each call costs, whatever its batch
    per_sample_s: float  # and per sample in it (tensor copies)
    per_request_s: float  # once per ensemble request: the wire, the scheduler, the combine step
    source: str  # "measured" or why the default is used
    wire_s: float = 0.0  # once per request to one model (a group that combines): the wire
    client_s: float = 0.0  # a load generator on the same machine (perf_analyzer), per request

    def call_s(self, batch: float) -> float:
        """CPU seconds one served call of `batch` samples adds to the member's compute."""
        return self.per_call_s + self.per_sample_s * batch

    def to_json(self) -> dict[str, float | str]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"serving cost ({self.source}): {1000 * self.per_call_s:.3f} ms CPU per call + "
            f"{1000 * self.per_sample_s:.4f} ms per sample; per request "
            f"{1000 * self.per_request_s:.3f} ms through the ensemble scheduler, "
            f"{1000 * self.wire_s:.3f} ms to one model, {1000 * self.client_s:.3f} ms for a "
            "perf_analyzer client on this machine"
        )


def default_cost(reason: str) -> ServingCost:
    return ServingCost(DEFAULT_PER_CALL_S, 0.0, 0.0, f"default ({reason})")


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
        return self.members.get(member, {}).get(device_class, {})

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
        members = {
            m: {c: {int(b): _entry(e) for b, e in by_b.items()} for c, by_b in by_c.items()}
            for m, by_c in data["members"].items()
        }
        extra = {k: v for k, v in data.items() if k not in {"version", "members"}}
        return cls(members=members, extra=extra)


def _entry(data: dict[str, Any]) -> ProfileEntry:
    extra = {k: v for k, v in data.items() if k not in {"throughput", "memory_bytes"}}
    return ProfileEntry(float(data["throughput"]), int(data["memory_bytes"]), extra)


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        return Profile.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found; create it with `tritongen profile`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(f"{path}: not a valid profile.json ({type(exc).__name__}: {exc})") from None
