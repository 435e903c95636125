"""The demo ensemble: three classifiers of different architectures, trained in seconds on the
8×8 digits set that scikit-learn ships (no download), exported to ONNX.

    python -m tritongen.examples.digits OUT_DIR   # writes OUT_DIR/ensemble.yaml and models/
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Digits:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_digits_split() -> Digits:
    """Pixels scaled to [0, 1] as float32 rows of 64; a fixed held-out quarter."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y
    )
    return Digits(train_x, train_y, test_x, test_y)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCnn(nn.Module):
    """Treats each row as the 8×8 image it is."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x.reshape(-1, 1, 8, 8))
        return self.head(features.flatten(1))


class ResidualMlp(nn.Module):
    """Wider and deeper: two residual blocks of 256 units."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.stem = nn.Linear(64, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(2)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


ARCHITECTURES = {"mlp": Mlp, "cnn": SmallCnn, "resmlp": ResidualMlp}


def train(model: nn.Module, digits: Digits, epochs: int = 30, seed: int = SEED) -> nn.Module:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(digits.train_x), torch.from_numpy(digits.train_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor | None = None) -> None:
    """Export with a dynamic batch dimension; input `pixels`, output `logits`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 64) if example is None else example
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, path, example)


def _export(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )


SPEC = """\
# The demo ensemble: three digit classifiers combined by the mean of their softmax outputs.
name: digits
members:
  - name: mlp
    model: models/mlp.onnx
  - name: cnn
    model: models/cnn.onnx
  - name: resmlp
    model: models/resmlp.onnx
combine:
  rule: mean
  transform: softmax
max_batch_size: 32
"""


def write_example(out_dir: str | Path, epochs: int = 30) -> Path:
    """Train and export the three members; return the path of the ensemble spec."""
    out_dir = Path(out_dir)
    digits = load_digits_split()
    torch.manual_seed(SEED)
    for seed, (name, architecture) in enumerate(ARCHITECTURES.items()):
        torch.manual_seed(SEED + seed)
        export_onnx(
            train(architecture(), digits, epochs, SEED + seed), out_dir / "models" / f"{name}.onnx"
        )
    spec = out_dir / "ensemble.yaml"
    spec.write_text(SPEC)
    return spec


if __name__ == "__main__":
    print(write_example(sys.argv[1] if len(sys.argv) > 1 else "examples/digits"))
