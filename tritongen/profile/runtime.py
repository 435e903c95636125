"""How a profiling child opens a member: with the runtime and settings of a served instance.

onnxruntime sessions are configured here as the rendered member's are; a torch member is
opened by the very `TorchSession` class the rendered repository carries
(`templates/sessions.py`), so that what is profiled is what is served. Imports onnxruntime or
torch lazily, and only the one the member needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

ONNXRUNTIME = "onnxruntime"
TORCH = "torch"


@dataclass(frozen=True)
class SessionSettings:
    """How the member's session is configured: the same way a served instance is."""

    providers: tuple[Any, ...]  # onnxruntime: names, or (name, options) pairs
    intra_op_threads: int
    inter_op_threads: int = 1
    sequential: bool = True  # ORT_SEQUENTIAL: one op at a time, parallelism inside ops
    optimization: str = "ORT_ENABLE_ALL"
    runtime: str = ONNXRUNTIME
    device: str = "cpu"  # torch: "cpu" or "cuda:N"
    input_names: tuple[str, ...] = ()  # torch: forward()'s order
    output_index: int = 0  # torch: the output that is combined

    def describe(self) -> dict[str, Any]:
        if self.runtime == TORCH:
            return {"runtime": TORCH, "device": self.device, "threads": self.intra_op_threads}
        return {
            "providers": [p if isinstance(p, str) else p[0] for p in self.providers],
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "execution_mode": "ORT_SEQUENTIAL" if self.sequential else "ORT_PARALLEL",
            "graph_optimization_level": self.optimization,
        }


def session_settings(
    kind: Literal["cpu", "gpu"],
    threads: int,
    gpu_index: int | None = None,
    *,
    runtime: str = ONNXRUNTIME,
    input_names: Sequence[str] = (),
    output_index: int = 0,
) -> SessionSettings:
    """The settings of the rendered member (templates/member_model.py): on a CPU, `threads`
    intra-op threads; on a GPU, that ordinal (onnxruntime's CUDA provider with its default
    arena, which grows by powers of two: the memory figure is what a served instance holds)."""
    if runtime == TORCH:
        device = "cpu" if kind == "cpu" else f"cuda:{gpu_index or 0}"
        return SessionSettings(
            providers=(),
            intra_op_threads=threads if kind == "cpu" else 1,
            runtime=TORCH,
            device=device,
            input_names=tuple(input_names),
            output_index=output_index,
        )
    if kind == "cpu":
        return SessionSettings(providers=("CPUExecutionProvider",), intra_op_threads=threads)
    return SessionSettings(
        providers=(
            ("CUDAExecutionProvider", {"device_id": gpu_index or 0}),
            "CPUExecutionProvider",
        ),
        intra_op_threads=1,  # only the few ops that fall back to the CPU use it
    )


def import_runtime(settings: SessionSettings) -> None:
    """Load the runtime's library: a served instance pays for it before its session."""
    if settings.runtime == TORCH:
        import torch  # noqa: F401
    else:
        import onnxruntime  # noqa: F401


def build_session(model_path: str, settings: SessionSettings) -> Any:
    if settings.runtime == TORCH:
        from tritongen.templates.sessions import TorchSession

        return TorchSession(
            model_path,
            settings.device,
            settings.intra_op_threads,
            settings.input_names,
            settings.output_index,
        )
    return _onnxruntime_session(model_path, settings)


def _onnxruntime_session(model_path: str, settings: SessionSettings) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if settings.sequential else ort.ExecutionMode.ORT_PARALLEL
    )
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.optimization)
    options.log_severity_level = 3  # errors only: warnings would garble the progress bar
    check_providers(settings.providers, ort.get_available_providers())
    session = ort.InferenceSession(model_path, options, providers=list(settings.providers))
    check_providers(settings.providers, session.get_providers())
    return session


def check_providers(requested: Sequence[Any], active: Sequence[str]) -> None:
    """Refuse a session whose first provider is missing (before: not available in this
    build; after: dropped at load). Some onnxruntime versions silently fall back to the CPU,
    and a GPU figure measured on the CPU would be a lie."""
    first = requested[0] if isinstance(requested[0], str) else requested[0][0]
    if first not in active:
        raise RuntimeError(
            f"{first} is not available in this onnxruntime (only {', '.join(active)}); "
            "install onnxruntime-gpu with a matching CUDA, or serve PyTorch members with "
            "runtime: torch"
        )


def runtime_version(runtime: str) -> str:
    """The runtime's version, for the point cache: a point measured with another is stale."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{runtime} {version(runtime)}" if runtime == TORCH else version(runtime)
    except PackageNotFoundError:
        return "unknown"
