"""The device inventory: what the planner may place instances on (`DEVICES.json`)."""

from __future__ import annotations

import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tritongen.files import read_json, validate
from tritongen.spec.cores import usable_cores
from tritongen.spec.ensemble import Name, TlsFiles, Url

CPU_ID = "cpu"
# A CPU's device class is its model and core count (`cpu-<model>-<cores>c`), so profiles of
# different CPUs never mix; a plain `cpu` (hand-written files) stands for any CPU.
CPU_ALIAS = "cpu"
CPU_CLASS_PREFIX = "cpu-"
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
    node_tls: dict[str, TlsFiles] = field(default_factory=dict)  # node -> its TLS files
    warnings: tuple[str, ...] = field(default=(), compare=False)  # what detection assumed

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
        return Inventory(
            tuple(d for d in self.devices if d.node == node), self.node_urls, self.node_tls
        )

    def node_url(self, node: str) -> str:
        """gRPC host:port of a node's tritonserver; by default its name (a compose or
        Kubernetes service's DNS name) on Triton's gRPC port."""
        return self.node_urls.get(node, f"{node}:{GRPC_PORT}")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"devices": [d.to_json() for d in self.devices]}
        if self.node_urls:
            data["nodes"] = {n: {"grpc_url": url} for n, url in self.node_urls.items()}
            for node, tls in self.node_tls.items():
                data["nodes"][node]["tls"] = tls.model_dump(mode="json", exclude_none=True)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


PositiveBytes = Annotated[int, Field(strict=True, gt=0, le=2**60)]
Cores = Annotated[int, Field(strict=True, ge=1, le=65_536)]
GpuIndex = Annotated[int, Field(strict=True, ge=0, le=1023)]
DeviceClass = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")]


class _DeviceEntry(BaseModel):
    """One device of DEVICES.json, checked by type and range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Name
    kind: Literal["cpu", "gpu"]
    device_class: DeviceClass | None = Field(default=None, alias="class")
    memory_bytes: PositiveBytes
    cores: Cores | None = None
    index: GpuIndex | None = None
    node: Name | None = None

    @model_validator(mode="after")
    def _fits_its_kind(self) -> _DeviceEntry:
        if self.kind == "cpu" and self.index is not None:
            raise ValueError("index is a GPU's CUDA ordinal; a CPU has none")
        if self.kind == "gpu" and is_cpu_class(self.device_class or "gpu"):
            raise ValueError(f"class {self.device_class!r} names a CPU; this is a GPU")
        return self

    def device(self) -> Device:
        return Device(
            id=self.id,
            kind=self.kind,
            device_class=self.device_class or self.kind,
            memory_bytes=self.memory_bytes,
            cores=self.cores or (1 if self.kind == "cpu" else None),
            index=self.index,
            node=self.node,
        )


class _NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grpc_url: Url
    tls: TlsFiles | None = None  # the BLS combiner calls this node over TLS


class _DevicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[_DeviceEntry] = Field(min_length=1, max_length=4096)
    nodes: dict[Name, _NodeEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> _DevicesFile:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"devices: ids must be unique, got {ids}")
        named = [d.node is not None for d in self.devices]
        if any(named) and not all(named):
            raise ValueError(
                f"devices.{named.index(False)}: has no node while other devices do; "
                "give every device a node, or none"
            )
        known = {d.node for d in self.devices}
        for node in self.nodes:
            if node not in known:
                raise ValueError(
                    f"nodes.{node}: no device has node {node!r}; remove it or fix its name"
                )
        return self


def load_inventory(path: str | Path) -> Inventory:
    """Read a DEVICES.json file; every problem is one `SpecError` line."""
    path = Path(path)
    data = validate(
        _DevicesFile, read_json(path, "create it with `tritongen devices --json`"), path
    )
    return Inventory(
        tuple(entry.device() for entry in data.devices),
        {node: entry.grpc_url for node, entry in data.nodes.items()},
        {
            node: entry.tls.resolved(path.parent)
            for node, entry in data.nodes.items()
            if entry.tls is not None
        },
    )


def detect_devices() -> Inventory:
    """This machine: the CPU (cores from the process's affinity) and every NVIDIA GPU."""
    gpus = detect_gpus()
    warnings: tuple[str, ...] = ()
    if not gpus and Path("/dev/nvidia0").exists():
        warnings = (
            "/dev/nvidia0 exists but NVML lists no GPU (no driver library, or no "
            "nvidia-ml-py: pip install 'tritongen[gpu]'); assumed this machine has the CPU only",
        )
    return Inventory((detect_cpu(), *gpus), warnings=warnings)


def detect_cpu() -> Device:
    cores = usable_cores()
    return Device(
        id=CPU_ID,
        kind="cpu",
        device_class=cpu_class(cpu_model_name(), cores),
        memory_bytes=psutil.virtual_memory().total,
        cores=cores,
    )


def cpu_model_name() -> str:
    """`model name` from /proc/cpuinfo (Linux x86), else what `platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_class(model_name: str, cores: int) -> str:
    """`Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz`, 2 cores ->
    `cpu-Intel-Xeon-Platinum-8481C-2.70GHz-2c`: the model and the cores a profile ran on."""
    noise = {"(R)", "(TM)", "CPU", "PROCESSOR", "@"}
    words = [w for w in re.split(r"\s+", model_name) if w and w.upper() not in noise]
    words = [re.sub(r"\((R|TM)\)", "", w, flags=re.IGNORECASE) for w in words]
    slug = re.sub(r"[^A-Za-z0-9.+]+", "-", "-".join(words)).strip("-.")[:96] or "unknown"
    return f"{CPU_CLASS_PREFIX}{slug}-{cores}c"


def is_cpu_class(device_class: str) -> bool:
    return device_class == CPU_ALIAS or device_class.startswith(CPU_CLASS_PREFIX)


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
