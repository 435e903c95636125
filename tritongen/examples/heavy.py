"""The heavier benchmark ensemble: four CNNs on 3×128×128 inputs costing about 1 to 8 ms of
one CPU core per sample each — where a served call's own cost matters least, so how close a
plan comes to the hardware bound shows what serving still wastes.

Plain torch modules with random weights, calibrated like `tritongen.examples.vision`.

    python -m tritongen.examples.heavy OUT_DIR   # writes OUT_DIR/ensemble.yaml and models/
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from tritongen.examples.vision import CLASSES, Classifier, _conv, _Residual, write_calibrated

IMAGE = (3, 128, 128)


class WideResNet(Classifier):
    """Residual blocks at 32, 64 and 128 channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, 2 * width, 4 * width):
            layers += [_conv(cin, cout, 2), _Residual(cout)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, CLASSES)


class Plain(Classifier):
    """Stacks of full-resolution 3×3 convolutions between poolings."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:
            layers += [_conv(cin, cout), _conv(cout, cout), nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, CLASSES)


ARCHITECTURES: dict[str, Callable[[], Classifier]] = {
    "res16": lambda: WideResNet(16),
    "res32": lambda: WideResNet(32),
    "plain8": lambda: Plain((8, 16, 32, 64)),
    "plain16": lambda: Plain((16, 32, 64, 64)),
}


SPEC = """\
# The heavier benchmark ensemble: four CNNs of 1 to 8 ms per sample on 3x128x128 inputs.
name: heavy
members:
  - name: res16
    model: models/res16.onnx
  - name: res32
    model: models/res32.onnx
  - name: plain8
    model: models/plain8.onnx
  - name: plain16
    model: models/plain16.onnx
combine:
  rule: mean
  transform: softmax
max_batch_size: 16
"""


def write_example(out_dir: str | Path) -> Path:
    return write_calibrated(out_dir, ARCHITECTURES, IMAGE, SPEC)


if __name__ == "__main__":
    print(write_example(sys.argv[1] if len(sys.argv) > 1 else "examples/heavy"))
