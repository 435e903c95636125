"""Members as users have them, built with onnx.helper (and torch for PyTorch members): two
INT64 inputs and two outputs, FP16, external data, a dynamic non-batch dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_factory import CLASSES, FEATURES, linear_model, save_graph

VOCAB = 50
TOKENS = 6


def token_model(
    path: Path,
    seed: int,
    *,
    reversed_inputs: bool = False,
    names: tuple[str, str] = ("input_ids", "attention_mask"),
) -> Path:
    """input_ids, attention_mask [batch, TOKENS] int64 (or `names`) -> `count` [batch, 1] and
    `logits` [batch, CLASSES]: the mean of the unmasked tokens' embeddings, plus a bias. No
    guard against an all-zero mask: 0 / 0 is NaN there, as in real models."""
    rng = np.random.default_rng(seed)
    constants = {
        "E": (rng.standard_normal((VOCAB, CLASSES)) * 2).astype(np.float32),
        "B": (rng.standard_normal(CLASSES) * 0.5).astype(np.float32),
        "Axis1": np.array([1], np.int64),
        "AxisLast": np.array([-1], np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "AxisLast"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "Axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "Axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("Add", ["mean", "B"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", TOKENS])
        for name in ("input_ids", "attention_mask")
    ]
    renames = dict(zip(("input_ids", "attention_mask"), names, strict=True))
    for node in nodes:
        node.input[:] = [renames.get(i, i) for i in node.input]
    for value in inputs:
        value.name = renames[value.name]
    graph = helper.make_graph(
        nodes,
        path.stem,
        inputs[::-1] if reversed_inputs else inputs,
        [
            helper.make_tensor_value_info("count", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
        ],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    return save_graph(graph, path)


def tokens(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids and masks of random lengths (at least one token), padded at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (rows, TOKENS))
    lengths = rng.integers(1, TOKENS + 1, (rows, 1))
    mask = (np.arange(TOKENS)[None, :] < lengths).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def cast_model(
    path: Path, seed: int, input_type: int = TensorProto.FLOAT16, output_type: int | None = None
) -> Path:
    """x [batch, FEATURES] -> logits [batch, CLASSES], computed in float32 between two Casts:
    any input and output dtype (default FP16 in and out)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((FEATURES, CLASSES))).astype(np.float32)
    b = (rng.standard_normal(CLASSES) * 0.5).astype(np.float32)
    output_type = input_type if output_type is None else output_type
    nodes = [
        helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x32", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["y32"]),
        helper.make_node("Cast", ["y32"], ["logits"], to=output_type),
    ]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", input_type, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", output_type, ["batch", CLASSES])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return save_graph(graph, path)


def external_data_model(path: Path, seed: int) -> Path:
    """linear_model with its weights in `<stem>.weights` beside it."""
    linear_model(path, seed)
    model = onnx.load(str(path))
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.stem}.weights",
        size_threshold=0,
    )
    return path


def dynamic_model(path: Path, seed: int) -> Path:
    """linear_model whose feature dimension is dynamic: [batch, ?] -> [batch, CLASSES]."""
    linear_model(path, seed)
    model = onnx.load(str(path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_param = "features"
    onnx.save(model, str(path))
    return path


MODULES = '''
import torch
from torch import nn

FEATURES, CLASSES = {features}, {classes}


def mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


class ScaledByBatch(nn.Module):
    """Multiplies by the batch size taken as a Python number: tracing bakes the example's in."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        return self.linear(x) * float(x.shape[0])


def untraceable():
    torch.manual_seed(4)
    return ScaledByBatch()


def broken():
    raise ValueError("no weights here")


def not_a_module():
    return 42
'''


def torch_members(folder: Path) -> tuple[Path, str]:
    """A TorchScript file and a module file (`tiny_modules.py`) of PyTorch members, all
    [batch, FEATURES] float32 -> [batch, CLASSES]; returns the .pt path and the module name."""
    import torch
    from torch import nn

    module = folder / "tiny_modules.py"
    module.write_text(MODULES.format(features=FEATURES, classes=CLASSES))
    torch.manual_seed(5)
    scripted = torch.jit.script(
        nn.Sequential(nn.Linear(FEATURES, 12), nn.Tanh(), nn.Linear(12, CLASSES)).eval()
    )
    path = folder / "scripted.pt"
    torch.jit.save(scripted, str(path))
    return path, "tiny_modules"
