"""The device inventory: what the planner may place instances on (`DEVICES.json`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from tritongen.errors import SpecError
from tritongen.spec.ensemble import NAME_PATTERN, NAME_RULE, URL_PATTERN

CPU_ID = "cpu"
GRPC_PORT = 8001  # Triton's default gRPC port: a node's url when DEVICES.json gives none


@dataclass(frozen=True)
class Device:
    id: str
    kind: Literal["cpu", "gpu"]
    device_class: str
    memory_bytes: int
    cores: int | None = None  # CPU only: cores the server may use
    index: int | None = None  # GPU only: CUDA ordinal, rendered as `gpus: [index]`
    node: str | None = None  # machine the device lives on (multi-node plans)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        data["class"] = data.pop("device_class")
        return data

    @property
    def gpu_index(self) -> int:
        """The CUDA ordinal: `index` when given, else the digits at the end of `id`."""
        if self.index is not None:
            return self.index
        match = re.search(r"(\d+)$", self.id)
        return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class Inventory:
    devices: tuple[Device, ...] = field(default_factory=tuple)
    node_urls: dict[str, str] = field(default_factory=dict)  # node -> gRPC host:port

    def __getitem__(self, device_id: str) -> Device:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)

    @property
    def classes(self) -> list[str]:
        return sorted({d.device_class for d in self.devices})

    @property
    def cpu(self) -> Device | None:
        return next((d for d in self.devices if d.kind == "cpu"), None)

    @property
    def nodes(self) -> list[str]:
        """The nodes the devices name, in DEVICES.json order; empty when none does."""
        return list(dict.fromkeys(d.node for d in self.devices if d.node is not None))

    def on_node(self, node: str) -> Inventory:
        """The devices of one node, as an inventory of its own."""
        return Inventory(tuple(d for d in self.devices if d.node == node), self.node_urls)

    def node_url(self, node: str) -> str:
        """gRPC host:port of a node's tritonserver; by default its name (a compose or
        Kubernetes service's DNS name) on Triton's gRPC port."""
        return self.node_urls.get(node, f"{node}:{GRPC_PORT}")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"devices": [d.to_json() for d in self.devices]}
        if self.node_urls:
            data["nodes"] = {n: {"grpc_url": url} for n, url in self.node_urls.items()}
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def load_inventory(path: str | Path) -> Inventory:
    """Read a DEVICES.json file; every problem is one `SpecError` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            f"{path}: file not found; create it with `tritongen devices --json`"
        ) from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SpecError(f'{path}: expected {{"devices": [...]}} with at least one device')
    devices = tuple(_device(path, i, e) for i, e in enumerate(entries))
    ids = [d.id for d in devices]
    if len(set(ids)) != len(ids):
        raise SpecError(f"{path}: devices: ids must be unique, got {ids}")
    _check_every_device_has_a_node_or_none(path, devices)
    return Inventory(devices, _node_urls(path, data.get("nodes", {}), devices))


def _check_every_device_has_a_node_or_none(path: Path, devices: tuple[Device, ...]) -> None:
    named = [d.node is not None for d in devices]
    if any(named) and not all(named):
        index = named.index(False)
        raise SpecError(
            f"{path}: devices.{index}: has no node while other devices do; "
            "give every device a node, or none"
        )


def _node_urls(path: Path, entries: Any, devices: tuple[Device, ...]) -> dict[str, str]:
    """The top-level `"nodes": {"n1": {"grpc_url": "host:port"}}`, checked."""
    if not isinstance(entries, dict):
        raise SpecError(f'{path}: nodes: expected {{"<node>": {{"grpc_url": "host:port"}}}}')
    known = {d.node for d in devices}
    urls = {}
    for node, entry in entries.items():
        where = f"{path}: nodes.{node}"
        if node not in known:
            raise SpecError(f"{where}: no device has node {node!r}; remove it or fix its name")
        if not isinstance(entry, dict) or set(entry) != {"grpc_url"}:
            raise SpecError(f'{where}: expected {{"grpc_url": "host:port"}} and nothing else')
        url = entry["grpc_url"]
        if not isinstance(url, str) or not re.fullmatch(URL_PATTERN, url):
            raise SpecError(f"{where}.grpc_url: {url!r} is not host:port (e.g. 10.0.0.2:8001)")
        urls[node] = url
    return urls


def _device(path: Path, index: int, entry: Any) -> Device:
    where = f"{path}: devices.{index}"
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: expected an object with id, kind, class and memory_bytes")
    unknown = set(entry) - {"id", "kind", "class", "memory_bytes", "cores", "index", "node"}
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}")
    try:
        kind = entry["kind"]
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"kind must be 'cpu' or 'gpu', not {kind!r}")
        memory = int(entry["memory_bytes"])
        if memory <= 0:
            raise ValueError("memory_bytes must be > 0")
        cores = int(entry.get("cores") or (1 if kind == "cpu" else 0)) or None
        return Device(
            id=str(entry["id"]),
            kind=kind,
            device_class=str(entry.get("class", kind)),
            memory_bytes=memory,
            cores=cores,
            index=entry.get("index"),
            node=_node_name(entry.get("node")),
        )
    except KeyError as exc:
        raise SpecError(f"{where}: field {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _node_name(node: Any) -> str | None:
    """A node's name names a folder (`DIR/nodes/<node>`): the spec's rule for names."""
    if node is None or (isinstance(node, str) and re.fullmatch(NAME_PATTERN, node)):
        return node
    raise ValueError(f"node {node!r} is not a valid name; {NAME_RULE}")


def detect_devices() -> Inventory:
    """This machine: the CPU (cores from the process's affinity) and every NVIDIA GPU."""
    return Inventory((detect_cpu(), *detect_gpus()))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which a container may limit."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def detect_cpu() -> Device:
    return Device(
        id=CPU_ID,
        kind="cpu",
        device_class="cpu",
        memory_bytes=psutil.virtual_memory().total,
        cores=usable_cores(),
    )


def detect_gpus() -> list[Device]:
    """Every GPU NVML sees; an empty list when there is no driver or no pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no pynvml, no driver, no GPU: a CPU-only machine
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            gpus.append(
                Device(
                    id=f"gpu{index}",
                    kind="gpu",
                    device_class=gpu_class(name, memory),
                    memory_bytes=memory,
                    index=index,
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def gpu_class(name: str, memory_bytes: int) -> str:
    """`NVIDIA H100 80GB HBM3`, 80 GiB -> `H100-80GB`: model and memory, for profile keys."""
    words = [w for w in re.split(r"[\s_]+", name) if w and w.upper() not in {"NVIDIA", "TESLA"}]
    model = words[0] if words else "GPU"
    return f"{model}-{round(memory_bytes / 2**30)}GB"
