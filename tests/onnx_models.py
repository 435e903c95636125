"""Tiny ONNX models built with onnx.helper, for tests that need real files to run."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_factory import save_graph
from tritongen.profile.worker import Point, Started


def mlp(path: Path, widths: list[int], *, batch: int | str = "batch", seed: int = 0) -> Path:
    """An MLP: MatMul + Add (+ Relu between layers), input [batch, widths[0]], float32.
    `batch` is a dim name (dynamic) or an int (a fixed batch dimension)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
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
    return save_graph(graph, path)


def unrunnable(path: Path, width: int = 16, classes: int = 4) -> Path:
    """A model onnx parses but onnxruntime refuses: a node of an operator that does not exist."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="")],
        "unrunnable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
    )
    return save_graph(graph, path, check=False)


def write_spec(folder: Path, members: dict[str, Path], max_batch_size: int = 8) -> Path:
    lines = ["name: test_ensemble", "members:"]
    for name, model in members.items():
        lines += [f"  - name: {name}", f"    model: {model}"]
    lines.append(f"max_batch_size: {max_batch_size}")
    spec = folder / "ensemble.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def even_batches_only(path: Path, width: int = 64, classes: int = 10) -> Path:
    """Runs only at even batch sizes: it reshapes [batch, width] to [-1, 2 * width]."""
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((2 * width, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "pairs"], ["paired"]),
            helper.make_node("MatMul", ["paired", "w"], ["y"]),
        ],
        "even_batches_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(np.array([-1, 2 * width], np.int64), "pairs"),
            numpy_helper.from_array(weight, "w"),
        ],
    )
    return save_graph(graph, path, check=False)


def child_killed_at_batch_8(job: Any, conn: Any) -> None:
    """Stands in for the profiling child: SIGKILLed (as by the out-of-memory killer) once it
    starts batch 8 or larger; otherwise it reports a made-up point per batch."""
    for batch in job.batches:
        conn.send(Started(batch, 0))
        if batch >= 8:
            os.kill(os.getpid(), signal.SIGKILL)
    for batch in job.batches:
        conn.send(fake_point(batch, threads=job.settings.intra_op_threads))
    conn.close()


def fake_point(batch: int, threads: int = 1, latency_s: float = 0.001) -> Point:
    return Point(
        batch=batch,
        threads=threads,
        latency_s=latency_s,
        latency_p90_s=latency_s,
        spread=0.0,
        runs=10,
        cpu_s_per_call=latency_s * threads,
        contention=0.0,
        retried_rounds=0,
        memory_bytes=1000 * batch,
        process_bytes=50_000_000,
        point_s=0.6,
    )
