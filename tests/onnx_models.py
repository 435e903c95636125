"""Tiny ONNX models built with onnx.helper, for tests that need real files to run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(path: Path, widths: list[int], *, batch: int | str = "batch", seed: int = 0) -> Path:
    """An MLP: MatMul + Add (+ Relu between layers), input [batch, widths[0]], float32.
    `batch` is a dim name (dynamic) or an int (a fixed batch dimension)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        weight = rng.standard_normal((n_in, n_out)).astype(np.float32) / np.sqrt(n_in)
        inits += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"]),
        ]
        current = f"add{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def unrunnable(path: Path, width: int = 16, classes: int = 4) -> Path:
    """A model onnx parses but onnxruntime refuses: a node of an operator that does not exist."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="")],
        "unrunnable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def write_spec(folder: Path, members: dict[str, Path], max_batch_size: int = 8) -> Path:
    lines = ["name: test_ensemble", "members:"]
    for name, model in members.items():
        lines += [f"  - name: {name}", f"    model: {model}"]
    lines.append(f"max_batch_size: {max_batch_size}")
    spec = folder / "ensemble.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec
