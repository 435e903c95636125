"""The TorchScript file a PyTorch member is served from when its `runtime` is torch.

A TorchScript member is served from its own file. A `module:function` member is traced at
EXPORT_BATCH and the trace is compared with the module in eager mode at CHECK_BATCH rows, so
that a shape baked in by tracing shows, as its ONNX export is; the trace is cached beside that
export, by the same content key. The ONNX export still gives every later stage the member's
signature: only the file that runs changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tritongen.errors import SpecError
from tritongen.spec.ensemble import Spec
from tritongen.spec.torch_export import (
    CHECK_BATCH,
    EXPORT_BATCH,
    TOLERANCE,
    as_tuple,
    cache_key,
    example_tensors,
    export_cache_dir,
    first_line,
    import_torch,
    load_module,
    random_inputs,
    store,
)

TORCHSCRIPT_FILE = "model.pt"


def torchscript_member(spec: Spec, index: int) -> Path:
    """The TorchScript file that serves member `index`: its own, or a checked, cached trace."""
    member = spec.members[index]
    if member.kind == "torchscript":
        return member.model
    where = f"{spec.source}: members.{index}.model ({member.name})"
    torch = import_torch(where)
    examples = example_tensors(member)
    module, content = load_module(where, member, spec.source.parent, torch)
    target = export_cache_dir() / f"{cache_key(content, examples, torch)}-script" / TORCHSCRIPT_FILE
    if target.is_file():
        return target
    args = tuple(random_inputs(spec, examples, EXPORT_BATCH, torch, seed=0).values())
    with tempfile.TemporaryDirectory(prefix="tritongen-trace-") as tmp:
        traced = _trace(where, module, args, torch)
        _check_trace(where, spec, module, traced, examples, torch)
        torch.jit.save(traced, str(Path(tmp) / TORCHSCRIPT_FILE))
        store(Path(tmp), target.parent)
    return target


def _trace(where: str, module: Any, args: tuple[Any, ...], torch: Any) -> Any:
    with torch.no_grad():
        try:
            return torch.jit.trace(module, args, check_trace=False)
        except Exception as exc:
            raise SpecError(
                f"{where}: torch could not trace it ({type(exc).__name__}: {first_line(exc)}); "
                "save it with torch.jit.script and give the .pt file"
            ) from None


def _check_trace(
    where: str, spec: Spec, module: Any, traced: Any, examples: list[Any], torch: Any
) -> None:
    """Refuse a trace whose outputs differ from the module's at another batch size."""
    inputs = tuple(random_inputs(spec, examples, CHECK_BATCH, torch, seed=1).values())
    with torch.no_grad():
        expected = as_tuple(where, module(*inputs))
        try:
            got = as_tuple(where, traced(*inputs))
        except Exception as exc:
            raise SpecError(
                f"{where}: the trace does not run at batch {CHECK_BATCH} ({first_line(exc)}); "
                "make forward() independent of the batch size"
            ) from None
    for want, have in zip(expected, got, strict=True):
        rtol, atol = TOLERANCE.get(str(want.numpy().dtype), TOLERANCE["default"])
        if want.shape != have.shape or not np.allclose(
            have.numpy(), want.numpy(), rtol=rtol, atol=atol, equal_nan=True
        ):
            raise SpecError(
                f"{where}: the TorchScript trace does not match the module at batch "
                f"{CHECK_BATCH}; make forward() traceable or save it with torch.jit.script"
            )
