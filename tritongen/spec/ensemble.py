"""Load and validate the ensemble spec (`ensemble.yaml`), the first stage of the pipeline.

Every mistake a user can make here becomes one `SpecError` line naming the file, the field
and the fix; nothing downstream re-validates names, so they are safe in paths and configs.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tritongen.errors import SpecError
from tritongen.files import describe
from tritongen.spec.values import Fill

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NAME_RULE = "use 1-64 characters from A-Z a-z 0-9 _ -"
URL_PATTERN = r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$"  # host:port (gRPC) of a tritonserver
MAX_NODES = 10_000  # YAML values in one spec; far above any real ensemble, far below a bomb
# `model: package.module:function`, a function that returns a torch.nn.Module
MODULE_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth")
DType = Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]


class Rule(str, Enum):
    mean = "mean"
    weighted_mean = "weighted_mean"
    geometric_mean = "geometric_mean"
    majority_vote = "majority_vote"
    max = "max"


class Transform(str, Enum):
    softmax = "softmax"
    none = "none"


def _finite_positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a finite number > 0")
    return value


def _valid_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid name; {NAME_RULE}")
    return value


def _valid_url(value: str) -> str:
    if not re.fullmatch(URL_PATTERN, value):
        raise ValueError(f"{value!r} is not host:port (e.g. 10.0.0.2:8001)")
    return value


Url = Annotated[str, AfterValidator(_valid_url)]  # host:port (gRPC) of a tritonserver
# Names become folder names and config.pbtxt strings: the spec, DEVICES.json and plan.json
# all hold their names to this rule.
Name = Annotated[str, AfterValidator(_valid_name)]
Weight = Annotated[float, AfterValidator(_finite_positive)]
Shape = Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)]  # per sample, no batch


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accelerator(str, Enum):
    cuda = "cuda"  # onnxruntime's CUDA provider: the native backend's default on KIND_GPU
    tensorrt = "tensorrt"  # onnxruntime's TensorRT provider, CUDA for what TensorRT cannot run


class Runtime(str, Enum):
    """What runs a member in a Python-backend instance of the embedded server."""

    onnxruntime = "onnxruntime"  # its ONNX file (a PyTorch member's export)
    torch = "torch"  # a PyTorch member's TorchScript (its own, or a checked trace), CPU or GPU


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


class ExecutionSpec(_Strict):
    """How a member runs on GPU instances of the native onnxruntime backend (`--target docker`)."""

    accelerator: Accelerator = Accelerator.cuda
    precision: Precision = Precision.fp32
    workspace_mb: int = Field(default=1024, ge=1)  # TensorRT's builder workspace

    @model_validator(mode="after")
    def _precision_needs_tensorrt(self) -> ExecutionSpec:
        if self.precision is Precision.fp16 and self.accelerator is not Accelerator.tensorrt:
            raise ValueError(
                "precision fp16 needs accelerator: tensorrt "
                "(the CUDA provider runs the model in the precision it was exported in)"
            )
        return self


class TensorExample(_Strict):
    """One input of a PyTorch member: its per-sample shape and dtype."""

    shape: Shape
    dtype: DType = "float32"


class InputValues(_Strict):
    """What tritongen feeds an input when it makes inputs itself (see spec/values.py)."""

    value: float | None = None
    range: tuple[float, float] | None = None  # uniform in [low, high); whole numbers for ints

    @model_validator(mode="after")
    def _one_of(self) -> InputValues:
        if (self.value is None) == (self.range is None):
            raise ValueError("give either value: V or range: [low, high]")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} is empty; give [low, high] with low < high")
        return self

    def fill(self) -> Fill:
        if self.range is not None:
            return Fill(low=self.range[0], high=self.range[1])
        return Fill(value=self.value)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError("contains a NUL byte; give the path of a file")
    return value


FilePath = Annotated[Path, BeforeValidator(_no_nul)]


class TlsFiles(_Strict):
    """TLS for the gRPC calls the BLS combiner makes to another tritonserver (PEM files, as
    paths on the machine that serves the combiner). Empty: TLS with the system's roots."""

    root_certificates: FilePath | None = None  # the CA that signed the server's certificate
    private_key: FilePath | None = None  # mutual TLS: the client's key ...
    certificate_chain: FilePath | None = None  # ... and its certificate

    @model_validator(mode="after")
    def _key_with_chain(self) -> TlsFiles:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("give private_key and certificate_chain together (mutual TLS)")
        return self

    def resolved(self, folder: Path) -> TlsFiles:
        """The paths made absolute, relative ones taken from `folder` (the file naming them)."""
        return self.model_copy(
            update={
                key: path if path.is_absolute() else (folder / path).resolve()
                for key, path in self.model_dump().items()
                if path is not None
            }
        )


class MemberSpec(_Strict):
    name: Name
    # an .onnx file, a TorchScript file (.pt), or `package.module:function` returning an
    # nn.Module (PyTorch members are exported to ONNX, see spec/torch_export.py)
    model: FilePath
    weight: Weight = 1.0
    execution: ExecutionSpec | None = None  # overrides the ensemble's `execution`
    # host:port (gRPC) of another tritonserver that serves this member: the BLS combiner calls
    # it there (multi-node prototype); the model file still gives the member's signature.
    url: Url | None = None
    tls: TlsFiles | None = None  # TLS for the calls to `url`; plaintext without it
    output: str | None = None  # the output that is combined (default: see spec/members.py)
    input_map: dict[str, str] | None = None  # member input -> the combined model's input
    # per-sample shape for inputs with dynamic dims: one list, or one per input name
    profile_shape: Shape | dict[str, Shape] | None = None
    # PyTorch members: per-sample shape of the one float32 input, or name -> shape and dtype
    # for each input, in the order forward() takes them
    example_input: Shape | dict[str, TensorExample] | None = None
    runtime: Runtime = Runtime.onnxruntime  # torch: PyTorch members only (spec/torch_script.py)

    @model_validator(mode="after")
    def _tls_needs_url(self) -> MemberSpec:
        if self.tls is not None and self.url is None:
            raise ValueError("tls is only for a member with a url (served elsewhere)")
        return self

    @property
    def kind(self) -> Literal["onnx", "torchscript", "function"]:
        if MODULE_FUNCTION.fullmatch(str(self.model)):
            return "function"
        if self.model.suffix in TORCHSCRIPT_SUFFIXES:
            return "torchscript"
        return "onnx"

    @model_validator(mode="after")
    def _example_input_for_pytorch_only(self) -> MemberSpec:
        if self.kind == "onnx" and self.example_input is not None:
            raise ValueError("example_input is for PyTorch members (.pt or module:function)")
        if self.kind != "onnx" and self.example_input is None:
            raise ValueError(
                f"{self.model} is a PyTorch model: give example_input, the per-sample shape "
                "of its input (e.g. [3, 32, 32]), or {name: {shape: [...], dtype: int64}} "
                "for each input"
            )
        if self.kind == "onnx" and self.runtime is Runtime.torch:
            raise ValueError(
                "runtime: torch is for PyTorch members (.pt or module:function); an .onnx "
                "file runs on onnxruntime"
            )
        return self


class CombineSpec(_Strict):
    rule: Rule = Rule.mean
    transform: Transform = Transform.softmax
    dtype: DType | None = None  # the combined output's dtype; default: the members' output dtype


class SloSpec(_Strict):
    """What the served ensemble must keep to: a p99 latency at the concurrency that reaches
    the plan's throughput (`tritongen plan --max-p99-ms` overrides it)."""

    p99_ms: float = Field(gt=0, allow_inf_nan=False)


class Spec(_Strict):
    """One ensemble: what the user wrote, with `model` paths made absolute."""

    name: Name
    members: list[MemberSpec] = Field(min_length=1)
    combine: CombineSpec = CombineSpec()
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    devices: str = "auto"
    execution: ExecutionSpec = ExecutionSpec()
    # BLS combiner only: answer from the members that replied when some fail or are late.
    # Defaults: every member must answer (min_members = all), and no timeout.
    min_members: int | None = Field(default=None, ge=1)
    member_timeout_ms: int | None = Field(default=None, ge=1)
    # combined input (or member input) name -> the values tritongen feeds it itself
    input_values: dict[str, InputValues] = Field(default_factory=dict)
    slo: SloSpec | None = None
    source: Path = Field(default=Path("ensemble.yaml"), exclude=True)

    @field_validator("members")
    @classmethod
    def _unique_member_names(cls, members: list[MemberSpec]) -> list[MemberSpec]:
        seen: set[str] = set()
        for member in members:
            if member.name in seen:
                raise ValueError(f"member name {member.name!r} appears twice; names must be unique")
            seen.add(member.name)
        return members

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        if self.name in {m.name for m in self.members}:
            raise ValueError(f"ensemble name {self.name!r} is also a member name; rename one")
        if self.min_members is not None and self.min_members > len(self.members):
            raise ValueError(
                f"min_members={self.min_members} exceeds the {len(self.members)} members"
            )
        return self

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]

    @property
    def remote_urls(self) -> dict[str, str]:
        """Member name -> gRPC url, for the members served by another tritonserver."""
        return {m.name: m.url for m in self.members if m.url}

    @property
    def remote_tls(self) -> dict[str, TlsFiles]:
        """Member name -> TLS files, for the remote members called over TLS."""
        return {m.name: m.tls for m in self.members if m.url and m.tls is not None}

    def execution_of(self, member: str) -> ExecutionSpec:
        """The member's own `execution`, else the ensemble's."""
        spec = next(m for m in self.members if m.name == member)
        return spec.execution or self.execution


def load_spec(path: str | Path) -> Spec:
    """Read `path`, validate it and resolve member model paths relative to it."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        spec = Spec.model_validate({**data, "source": path})
    except ValidationError as exc:
        raise SpecError(f"{path}: {describe(exc)}") from None
    members = [
        m.model_copy(
            update={
                "model": m.model if m.kind == "function" else _resolve(path, m.model),
                "tls": m.tls and m.tls.resolved(path.parent),
            }
        )
        for m in spec.members
    ]
    return spec.model_copy(update={"members": members})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found; pass the path of an ensemble YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}: YAML syntax error{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML nested too deeply; an ensemble spec is flat") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with 'name' and 'members' at the top level")
    if _count_nodes(data, MAX_NODES) > MAX_NODES:
        raise SpecError(
            f"{path}: too large (more than {MAX_NODES} values, counting YAML aliases "
            "as often as they are used); an ensemble spec is a short list of members"
        )
    return data


def _count_nodes(data: Any, limit: int) -> int:
    """Values in `data`, each alias counted every time it is used; stops past `limit`."""
    count, stack = 0, [data]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def _resolve(spec_path: Path, model: Path) -> Path:
    return model if model.is_absolute() else (spec_path.parent / model).resolve()
