"""Small ONNX classifiers built with onnx.helper, with outputs that vary with the input, and
an independent reference for what a served ensemble must answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = 16
CLASSES = 5


def _weights(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def linear_model(
    path: Path,
    seed: int,
    *,
    features: int = FEATURES,
    classes: int = CLASSES,
    batch: int | str = "batch",
    elem_type: int = TensorProto.FLOAT,
    input_name: str = "x",
    output_name: str = "logits",
) -> Path:
    """logits = x @ W + b, weights scaled so that softmax is far from uniform."""
    rng = np.random.default_rng(seed)
    w = _weights(rng, (features, classes), 1.0)
    b = _weights(rng, (classes,), 0.5)
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], [output_name]),
    ]
    return _save(
        path,
        nodes,
        [w, b],
        ["W", "B"],
        features,
        classes,
        batch,
        elem_type,
        input_name,
        output_name,
    )


def mlp_model(
    path: Path, seed: int, *, hidden: int = 32, features: int = FEATURES, classes: int = CLASSES
) -> Path:
    """logits = relu(x @ W1 + b1) @ W2 + b2."""
    rng = np.random.default_rng(seed)
    params = [
        _weights(rng, (features, hidden), 0.8),
        _weights(rng, (hidden,), 0.3),
        _weights(rng, (hidden, classes), 0.8),
        _weights(rng, (classes,), 0.3),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W1"], ["a"]),
        helper.make_node("Add", ["a", "B1"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("MatMul", ["c", "W2"], ["d"]),
        helper.make_node("Add", ["d", "B2"], ["scores"]),
    ]
    return _save(
        path,
        nodes,
        params,
        ["W1", "B1", "W2", "B2"],
        features,
        classes,
        "batch",
        TensorProto.FLOAT,
        "input",
        "scores",
    )


def tanh_model(path: Path, seed: int, *, features: int = FEATURES, classes: int = CLASSES) -> Path:
    """logits = 3 * tanh(x @ W): bounded, a third architecture."""
    rng = np.random.default_rng(seed)
    w = _weights(rng, (features, classes), 0.7)
    k = np.array([3.0], dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Mul", ["t", "K"], ["out"]),
    ]
    return _save(
        path,
        nodes,
        [w, k],
        ["W", "K"],
        features,
        classes,
        "batch",
        TensorProto.FLOAT,
        "features",
        "out",
    )


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    params: list[np.ndarray],
    names: list[str],
    features: int,
    classes: int,
    batch: int | str,
    elem_type: int,
    input_name: str,
    output_name: str,
) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info(input_name, elem_type, [batch, features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(p, n) for p, n in zip(params, names, strict=True)],
    )
    return save_graph(graph, path)


def save_graph(graph: onnx.GraphProto, path: Path, *, check: bool = True) -> Path:
    """Save `graph` as an opset-17 model that this onnxruntime loads (IR version 8)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def three_members(folder: Path) -> list[Path]:
    return [
        linear_model(folder / "linear.onnx", 1),
        mlp_model(folder / "mlp.onnx", 2),
        tanh_model(folder / "tanh.onnx", 3),
    ]


def member_outputs(paths: list[Path], batch: np.ndarray) -> np.ndarray:
    """Each member's raw output computed by onnxruntime in this process: (members, rows, classes)."""
    import onnxruntime as ort

    outputs = []
    for path in paths:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: batch})[0])
    return np.stack(outputs).astype(np.float64)


def reference_combine(
    outputs: np.ndarray, rule: str, transform: str, weights: list[float]
) -> np.ndarray:
    """The combining rules of docs/FORMATS.md, written out plainly (independent of templates/combine.py)."""
    p = outputs
    if transform == "softmax":
        e = np.exp(p - p.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    w = np.asarray(weights, dtype=np.float64)
    members, rows, classes = p.shape
    if rule == "mean":
        return sum(p[m] for m in range(members)) / members
    if rule == "weighted_mean":
        return sum(w[m] * p[m] for m in range(members)) / w.sum()
    if rule == "geometric_mean":
        # Values <= 0 (raw logits with transform none) count as float32's smallest positive.
        logs = [np.log(np.maximum(p[m], np.finfo(np.float32).tiny)) for m in range(members)]
        g = np.exp(sum(w[m] * logs[m] for m in range(members)) / w.sum())
        return g / g.sum(axis=-1, keepdims=True)
    if rule == "max":
        return np.maximum.reduce([p[m] for m in range(members)])
    if rule == "majority_vote":
        votes = np.zeros((rows, classes))
        for m in range(members):
            for r, c in enumerate(p[m].argmax(axis=-1)):
                votes[r, c] += w[m]
        return votes / w.sum()
    raise ValueError(rule)
