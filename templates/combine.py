"""The ensemble's combination rules, vectorised over members and rows.

This file is copied next to every combiner's model.py: it imports numpy only, so the rendered
repository runs on any Triton with a Python backend (embedded, NGC image) without tritongen.
"""

import numpy as np

RULES = ("mean", "weighted_mean", "geometric_mean", "majority_vote", "max")
TRANSFORMS = ("softmax", "none")


def softmax(logits):
    """Softmax over the last axis, shifted by the row maximum for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def make_combiner(rule, transform, weights, dtype="float32"):
    """Return `combine(outputs) -> combined` for outputs stacked as (members, rows, ...classes).

    Weights are normalised once here so that the per-request path is a few numpy calls.
    `dtype` is the combined output's: the arithmetic runs in float32 (float64 for a 64-bit
    or int32 output, which float32 cannot hold exactly); max without softmax keeps the
    members' own dtype, exact for integers.
    """
    if rule not in RULES or transform not in TRANSFORMS:
        raise ValueError(f"unknown rule {rule!r} or transform {transform!r}")
    weights = np.asarray(weights, dtype=np.float64)
    if rule in ("mean", "max"):
        weights = np.ones_like(weights)
    normalised = (weights / weights.sum()).astype(np.float32)
    reduce = _REDUCERS[rule]
    compute = compute_dtype(dtype)
    exact = rule == "max" and transform == "none"

    def combine(outputs):
        if not exact:
            outputs = outputs.astype(compute, copy=False)
        if transform == "softmax":
            outputs = softmax(outputs)
        return reduce(outputs, normalised)

    return combine


def compute_dtype(dtype):
    """float64 where float32 would round the combined dtype's values, else float32."""
    dtype = np.dtype(dtype)
    return np.float64 if dtype.itemsize == 8 or dtype == np.int32 else np.float32


def _weighted_sum(weights, outputs):
    """Σ_m weights[m] · outputs[m], in numpy's own loops: a BLAS call (tensordot, dot) would
    wake numpy's BLAS threads, which spin between calls on the cores the members use."""
    return np.multiply(weights.reshape(-1, *([1] * (outputs.ndim - 1))), outputs).sum(axis=0)


def _weighted_mean(outputs, weights):
    return _weighted_sum(weights, outputs)


def _geometric_mean(outputs, weights):
    # Clip so that a zero probability from one member does not erase a class entirely.
    logs = np.log(np.maximum(outputs, np.finfo(np.float32).tiny))
    combined = np.exp(_weighted_sum(weights, logs))
    combined /= combined.sum(axis=-1, keepdims=True)
    return combined


def _max(outputs, weights):
    return outputs.max(axis=0)


def _majority_vote(outputs, weights):
    classes = outputs.shape[-1]
    elected = outputs.argmax(axis=-1)  # (members, rows, ...)
    one_hot = elected[..., None] == np.arange(classes)
    return _weighted_sum(weights, one_hot.astype(np.float32))


_REDUCERS = {
    "mean": _weighted_mean,
    "weighted_mean": _weighted_mean,
    "geometric_mean": _geometric_mean,
    "majority_vote": _majority_vote,
    "max": _max,
}


def non_finite_rows(combined):
    """Boolean per row: True where a member produced NaN or Inf that reached the result."""
    return ~np.isfinite(combined.reshape(len(combined), -1)).all(axis=1)
