"""Members that misbehave on purpose, for the fault-injection tests.

Inputs are rows of `FEATURES` standard-normal values, so a value of `MARKER` (1000) never occurs
by chance; putting it in a given column of a row asks for a given fault:

- column `NAN_COLUMN`: `faulty_model` returns NaN for that row (a NaN that only that row sees);
- column `RAISE_COLUMN`: `faulty_model` makes onnxruntime raise for the whole call;
- column `SLOW_COLUMN`: a member wrapped with `write_slow_wrapper` sleeps before answering.

On every other row `faulty_model` answers exactly what `linear_model` with the same seed does,
so the numpy reference of a healthy answer stays simple.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_factory import CLASSES, FEATURES, save_graph

MARKER = 1000.0
NAN_COLUMN, RAISE_COLUMN, SLOW_COLUMN = 0, 1, 2
SLOW_SECONDS = 4.0


def faulty_model(path: Path, seed: int) -> Path:
    """logits = x @ W + b, plus NaN on rows marked in NAN_COLUMN, and an out-of-range
    Gather when any row is marked in RAISE_COLUMN."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((FEATURES, CLASSES)) * 1.0).astype(np.float32)
    b = (rng.standard_normal((CLASSES,)) * 0.5).astype(np.float32)
    constants = {
        "W": w,
        "B": b,
        "Threshold": np.array([MARKER / 2], dtype=np.float32),
        "Zero": np.array([0.0], dtype=np.float32),
        "NanCol": np.array([NAN_COLUMN], dtype=np.int64),
        "RaiseCol": np.array([RAISE_COLUMN], dtype=np.int64),
        "One": np.array([1], dtype=np.int64),
        "Axis1": np.array([1], dtype=np.int64),
        "ClassIndex": np.arange(CLASSES, dtype=np.int64),
        "OutOfRange": np.array([100 * CLASSES], dtype=np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["clean"]),
        # NaN: 0 * sqrt(threshold - x[:, NAN_COLUMN]) is 0, or NaN where the marker is.
        helper.make_node("Slice", ["x", "NanCol", "_nan_end", "Axis1"], ["nan_in"]),
        helper.make_node("Add", ["NanCol", "One"], ["_nan_end"]),
        helper.make_node("Sub", ["Threshold", "nan_in"], ["headroom"]),
        helper.make_node("Sqrt", ["headroom"], ["root"]),
        helper.make_node("Mul", ["root", "Zero"], ["poison"]),
        helper.make_node("Add", ["clean", "poison"], ["poisoned"]),
        # Raise: gather columns 0..C-1, shifted out of range when the flag is 1.
        helper.make_node("Slice", ["x", "RaiseCol", "_raise_end", "Axis1"], ["raise_in"]),
        helper.make_node("Add", ["RaiseCol", "One"], ["_raise_end"]),
        helper.make_node("ReduceMax", ["raise_in"], ["raise_max"], keepdims=0),
        helper.make_node("Greater", ["raise_max", "Threshold"], ["raise_flag"]),
        helper.make_node("Cast", ["raise_flag"], ["extra"], to=TensorProto.INT64),
        helper.make_node("Mul", ["extra", "OutOfRange"], ["shift"]),
        helper.make_node("Add", ["ClassIndex", "shift"], ["columns"]),
        helper.make_node("Gather", ["poisoned", "columns"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        _topological(nodes, constants),
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return save_graph(graph, path)


def _topological(
    nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray]
) -> list[onnx.NodeProto]:
    """Order nodes so each comes after the producers of its inputs (ONNX requires it)."""
    produced = {"x", *constants}
    ordered, pending = [], list(nodes)
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        ordered += ready
        produced.update(o for n in ready for o in n.output)
        pending = [n for n in pending if n not in ready]
    return ordered


SLOW_WRAPPER = '''"""Test fault: the rendered member, but it sleeps when a row is marked in column {column}."""

import os
import sys
import time

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from member_model import TritonPythonModel as Member


class TritonPythonModel(Member):
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.input_names[0]).as_numpy()
            if (x[:, {column}] > {threshold}).any():
                time.sleep({seconds})
        return super().execute(requests)
'''


def write_slow_wrapper(version_dir: Path, seconds: float = SLOW_SECONDS) -> None:
    """Turn a rendered member's `1/` folder into one that sleeps on marked rows."""
    shutil.move(version_dir / "model.py", version_dir / "member_model.py")
    code = SLOW_WRAPPER.format(column=SLOW_COLUMN, threshold=MARKER / 2, seconds=seconds)
    (version_dir / "model.py").write_text(code)


def marked_rows(
    count: int, seed: int, column: int | None = None, rows: tuple[int, ...] = (0,)
) -> np.ndarray:
    """`count` standard-normal rows; `rows` of them carry the marker in `column`."""
    batch = np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)
    if column is not None:
        batch[list(rows), column] = MARKER
    return batch
