"""The values tritongen puts in an input when it makes inputs itself: to profile a member, to
check a PyTorch export, to warm a member up, for perf_analyzer and for `infer --random`.

Zeros are wrong for some inputs: an attention mask of zeros hides every token, and softmax
over nothing is NaN. So integer and boolean inputs named like a mask get ones, other integers
zeros (valid token ids and class indices), floats a standard normal; `input_values` in the
spec overrides any of them.

Imports numpy only: the profiling child process uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MASK_HINT = "mask"


@dataclass(frozen=True)
class Fill:
    """`value` everywhere, or uniform draws from [low, high) (whole numbers for integer
    dtypes), or neither: a standard normal."""

    value: float | None = None
    low: float | None = None
    high: float | None = None

    def sample(self, rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> Any:
        kind = np.dtype(dtype).kind
        if self.value is not None:
            return np.full(shape, self.value, dtype=dtype)
        if self.low is not None and self.high is not None:
            if kind in "iub":
                return rng.integers(int(self.low), int(self.high), shape).astype(dtype)
            return rng.uniform(self.low, self.high, shape).astype(dtype)
        if kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        return np.zeros(shape, dtype=dtype)

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.value:g}"
        if self.low is not None and self.high is not None:
            return f"[{self.low:g}, {self.high:g})"
        return "standard normal (floats) or 0"


def default_fill(name: str, dtype: str) -> Fill:
    """Ones for integer and boolean masks, else zeros (integers) or a standard normal."""
    if np.dtype(dtype).kind in "iub" and MASK_HINT in name.lower():
        return Fill(value=1)
    return Fill()
