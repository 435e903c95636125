"""PyTorch members: a TorchScript file (`.pt`) or `package.module:function` returning an
`nn.Module`, exported to ONNX once and checked.

The export runs torch's TorchScript-based exporter with the batch axis dynamic (every later
stage reads ONNX only), at batch EXPORT_BATCH; the ONNX output is then compared with torch's on
random input at CHECK_BATCH rows, another batch size, so that a shape baked in by tracing
shows. Exports are cached under tritongen's cache folder by content: the TorchScript file's
bytes, or the module's weights, architecture and source; the example input; torch's version.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritongen.errors import SpecError
from tritongen.paths import cache_dir
from tritongen.spec.ensemble import MemberSpec, Spec
from tritongen.spec.values import default_fill

OPSET = 17
EXPORT_BATCH = 2
CHECK_BATCH = 3
TOLERANCE = {"float16": (1e-2, 1e-2), "default": (1e-3, 1e-4)}  # (rtol, atol)
SINGLE_INPUT_NAME = "input"


@dataclass(frozen=True)
class ExampleTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]  # per sample


def export_member(spec: Spec, index: int) -> Path:
    """The member's ONNX export, from the cache or made and checked now."""
    member = spec.members[index]
    where = f"{spec.source}: members.{index}.model ({member.name})"
    torch = import_torch(where)
    examples = example_tensors(member)
    module, content = load_module(where, member, spec.source.parent, torch)
    # A member served by torch runs its TorchScript: its export only gives the signature, and
    # is not held to torch's outputs (nor cached where a checked export would be looked for).
    checked = member.runtime.value == "onnxruntime"
    key = cache_key(content, examples, torch) + ("" if checked else "-signature")
    target = export_cache_dir() / key / "model.onnx"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="tritongen-export-") as tmp:
        exported = Path(tmp) / "model.onnx"
        outputs = _export(where, spec, module, examples, exported, torch)
        if checked:
            _check(where, spec, module, examples, outputs, exported, torch)
        store(exported.parent, target.parent)
    return target


def export_cache_dir() -> Path:
    return cache_dir() / "torch_export"


def example_tensors(member: MemberSpec) -> list[ExampleTensor]:
    given = member.example_input
    if isinstance(given, list):
        return [ExampleTensor(SINGLE_INPUT_NAME, "float32", tuple(given))]
    assert given is not None  # the spec requires it for PyTorch members
    return [ExampleTensor(n, t.dtype, tuple(t.shape)) for n, t in given.items()]


def import_torch(where: str) -> Any:
    try:
        import torch
    except ImportError:
        raise SpecError(
            f"{where}: PyTorch members need torch; install it (pip install torch) or give an "
            ".onnx file"
        ) from None
    return torch


def load_module(where: str, member: MemberSpec, folder: Path, torch: Any) -> tuple[Any, bytes]:
    """The module in eval mode, and the bytes its export is cached by."""
    if member.kind == "torchscript":
        return _load_torchscript(where, member.model, torch)
    module = _call_function(where, str(member.model), folder, torch)
    return module, _module_content(module, torch)


def _load_torchscript(where: str, path: Path, torch: Any) -> tuple[Any, bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{where}: {path} not found; fix the path (relative to the spec)") from None
    except OSError as exc:
        raise SpecError(f"{where}: cannot read {path} ({exc.strerror})") from None
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise SpecError(
            f"{where}: {path.name} is not a TorchScript file ({first_line(exc)}); save it with "
            "torch.jit.save(torch.jit.script(model), path), or use model: module:function"
        ) from None
    return module.eval(), data


def _call_function(where: str, reference: str, folder: Path, torch: Any) -> Any:
    module_name, function_name = reference.split(":")
    with _importable_from(folder):
        try:
            python_module = importlib.import_module(module_name)
        except Exception as exc:
            raise SpecError(
                f"{where}: cannot import {module_name} ({type(exc).__name__}: "
                f"{first_line(exc)}); put it beside the spec or on PYTHONPATH"
            ) from None
    function = getattr(python_module, function_name, None)
    if not callable(function):
        raise SpecError(f"{where}: {module_name} has no function {function_name}")
    try:
        built = function()
    except Exception as exc:
        raise SpecError(
            f"{where}: {reference}() raised {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(built, torch.nn.Module):
        raise SpecError(
            f"{where}: {reference}() returned {type(built).__name__}, not a torch.nn.Module"
        )
    return built.eval()


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def _module_content(module: Any, torch: Any) -> bytes:
    """Weights, architecture and the defining source file: what makes one export differ."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        array = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{array.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    with contextlib.suppress(OSError, TypeError):
        digest.update(Path(inspect.getfile(type(module))).read_bytes())
    return digest.digest()


def cache_key(content: bytes, examples: list[ExampleTensor], torch: Any) -> str:
    described = json.dumps(
        [[e.name, e.dtype, list(e.shape)] for e in examples] + [torch.__version__, OPSET]
    )
    return hashlib.sha256(content + described.encode()).hexdigest()[:32]


def _export(
    where: str, spec: Spec, module: Any, examples: list[ExampleTensor], path: Path, torch: Any
) -> list[str]:
    """Export with every input's and output's batch axis dynamic; returns the output names."""
    args = tuple(random_inputs(spec, examples, EXPORT_BATCH, torch, seed=0).values())
    with torch.no_grad():
        try:
            outputs = as_tuple(where, module(*args))
        except Exception as exc:
            raise SpecError(
                f"{where}: forward() failed on example_input ({type(exc).__name__}: "
                f"{first_line(exc)}); check its shapes and dtypes"
            ) from None
    names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    input_names = [e.name for e in examples]
    dynamic = {n: {0: "batch"} for n in [*input_names, *names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=input_names,
                output_names=names,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:
            raise SpecError(
                f"{where}: torch could not export it to ONNX ({type(exc).__name__}: "
                f"{first_line(exc)}); export it yourself and give the .onnx file"
            ) from None
    return names


def as_tuple(where: str, result: Any) -> tuple[Any, ...]:
    import torch

    outputs = result if isinstance(result, tuple | list) else (result,)
    if not outputs or not all(isinstance(o, torch.Tensor) for o in outputs):
        raise SpecError(
            f"{where}: forward() must return a tensor or a tuple of tensors, "
            f"not {type(result).__name__}"
        )
    return tuple(outputs)


def random_inputs(
    spec: Spec, examples: list[ExampleTensor], rows: int, torch: Any, seed: int
) -> dict[str, Any]:
    """Inputs with the values tritongen feeds them (spec/values.py), torch tensors."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for e in examples:
        given = spec.input_values.get(e.name)
        fill = given.fill() if given is not None else default_fill(e.name, e.dtype)
        inputs[e.name] = torch.from_numpy(fill.sample(rng, e.dtype, (rows, *e.shape)))
    return inputs


def _check(
    where: str,
    spec: Spec,
    module: Any,
    examples: list[ExampleTensor],
    names: list[str],
    path: Path,
    torch: Any,
) -> None:
    """Refuse an export whose ONNX output differs from torch's on random input."""
    import onnxruntime as ort

    inputs = random_inputs(spec, examples, CHECK_BATCH, torch, seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in as_tuple(where, module(*inputs.values()))]
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(names, {n: t.numpy() for n, t in inputs.items()})
    except Exception as exc:
        raise SpecError(
            f"{where}: the ONNX export does not run at batch {CHECK_BATCH} "
            f"({first_line(exc)}); make forward() independent of the batch size"
        ) from None
    for name, want, have in zip(names, expected, got, strict=True):
        rtol, atol = TOLERANCE.get(str(want.dtype), TOLERANCE["default"])
        same_shape = want.shape == have.shape
        if not same_shape or not np.allclose(have, want, rtol=rtol, atol=atol, equal_nan=True):
            difference = (
                f"shape {list(have.shape)} for {list(want.shape)}"
                if not same_shape
                else f"largest difference {np.max(np.abs(have.astype(float) - want)):.3g}"
            )
            raise SpecError(
                f"{where}: the ONNX export does not match torch on random input ({name}: "
                f"{difference}); make forward() traceable (no Python branches or numbers "
                "taken from tensor values or shapes), or export it yourself"
            )


def store(folder: Path, target: Path) -> None:
    """Move the checked export into the cache in one rename; a concurrent twin wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    for item in folder.iterdir():
        shutil.copy2(item, staging / item.name)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
