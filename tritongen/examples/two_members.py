"""Two small ONNX classifiers to try tritongen on: the README's first ensemble. Two of the demo's
digit classifiers (an MLP and a CNN on 8×8 digits), trained in seconds, written as
DIR/mlp.onnx and DIR/cnn.onnx (input `pixels`: FP32 rows of 64; output `logits`: 10 classes).

    python -m tritongen.examples.two_members --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tritongen.examples.digits import ARCHITECTURES, SEED, export_onnx, load_digits_split, train

MEMBERS = ("mlp", "cnn")


def write_members(out_dir: Path, epochs: int = 30) -> list[Path]:
    """Train and export the two members into out_dir; return their paths."""
    digits = load_digits_split()
    paths = []
    for seed, name in enumerate(MEMBERS):
        torch.manual_seed(SEED + seed)
        path = out_dir / f"{name}.onnx"
        export_onnx(train(ARCHITECTURES[name](), digits, epochs, SEED + seed), path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the models to")
    args = parser.parse_args(argv)
    for path in write_members(args.out):
        print(path)


if __name__ == "__main__":
    main()
