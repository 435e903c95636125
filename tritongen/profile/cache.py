"""A cache of measured points, one JSON file per key, so that a second profile is instant.

The key is what changes a measurement: the model file (its sha256), the device class, the
onnxruntime version, the batch size, the intra-op thread count and the input shapes (a member
with dynamic dims is measured at the shape the spec declares). A point measured for a
shorter time than is asked now (a `--budget-s` run) is not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from tritongen.paths import cache_dir
from tritongen.profile.worker import ConcurrencyPoint, GroupLonePoint, Point

P = TypeVar("P", Point, ConcurrencyPoint, GroupLonePoint)


@dataclass(frozen=True)
class PointKey:
    sha256: str
    device_class: str
    onnxruntime: str
    batch: int
    threads: int
    shapes: str = ""  # JSON of input name -> per-sample dims
    instances: int = 1  # instances together (ConcurrencyPoint), 1 for a Point

    @property
    def filename(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32] + ".json"


def default_cache_dir() -> Path:
    return cache_dir() / "profile"


class PointCache:
    """Reads and writes points under `directory`; a damaged file is a miss, never an error."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_cache_dir()

    def get(self, key: PointKey, min_point_s: float, kind: type[P] = Point) -> P | None:  # type: ignore[assignment]
        try:
            data = json.loads((self.directory / key.filename).read_text())
            if data["key"] != asdict(key):
                return None
            point = kind(**{f.name: data["point"][f.name] for f in fields(kind)})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return point if point.point_s >= min_point_s else None

    def put(self, key: PointKey, point: Point | ConcurrencyPoint | GroupLonePoint) -> None:
        """Write atomically: a profile interrupted mid-write leaves no half file behind."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / key.filename
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": asdict(key), "point": asdict(point)}) + "\n")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the next run its speed-up
