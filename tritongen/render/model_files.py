"""The files a served model carries beside its config: a member's ONNX file with its external
data (and its TorchScript when torch serves it), and the warm-up samples Triton feeds before the server reports ready."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tritongen.spec.members import MemberModel

WARMUP_DIR = "warmup"  # Triton reads model_warmup's input_data_file from <model>/warmup/


ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"  # a member served by torch (runtime: torch)


def served_file_name(member: MemberModel) -> str:
    """The file a Python-backend instance runs: the TorchScript of a member served by torch."""
    return TORCHSCRIPT_FILE if member.torchscript is not None else ONNX_FILE


def copy_model(member: MemberModel, folder: Path, torchscript: bool = True) -> None:
    """`folder/model.onnx`, and its external data files at the same places relative to it;
    and `folder/model.pt` for a member served by torch (not for Triton's native backends)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(member.path, folder / ONNX_FILE)
    if torchscript and member.torchscript is not None:
        shutil.copyfile(member.torchscript, folder / TORCHSCRIPT_FILE)
    for location in member.external_data:
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(member.path.parent / location, target)


def warmup_batches(member: MemberModel, batch: int) -> list[int]:
    """1 (a lone request) and the planned batch; a model with a fixed batch runs only that."""
    return [batch] if member.max_batch_limit is not None else sorted({1, batch})


def warmup_file(index: int) -> str:
    return f"input_{index}"


def write_warmup_data(samples: list[np.ndarray], folder: Path) -> None:
    """One sample per input, raw and row-major (Triton repeats it for each row), holding the
    values tritongen feeds that input: ones for an attention mask, not NaN-making zeros."""
    folder.mkdir()
    for index, sample in enumerate(samples):
        (folder / warmup_file(index)).write_bytes(np.ascontiguousarray(sample).tobytes())
