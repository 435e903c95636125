"""Profiles: how fast one instance of each member runs, and how much memory it takes,
per device class and batch size (`profile.json`).

The measurement itself is filled in by the profiler issue; this module fixes the data type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritongen.errors import SpecError

PROFILE_VERSION = 1


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
