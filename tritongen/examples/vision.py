"""The benchmark ensemble: four image classifiers on 3×96×96 inputs, of very different cost.

Plain torch modules with random weights; each head is calibrated on random images so that
its logits spread (std ≈ 2) and its softmax varies with the input — an uncalibrated random
network answers almost the same distribution for every image, which would make every
equality check meaningless.

    python -m tritongen.examples.vision OUT_DIR   # writes OUT_DIR/ensemble.yaml and models/
    python -m tritongen.examples.vision OUT_DIR torch   # TorchScript members served by torch
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tritongen.examples.digits import export_onnx

IMAGE = (3, 96, 96)
CLASSES = 100
LOGIT_STD = 2.0


def _conv(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups), nn.ReLU())


class Classifier(nn.Module):
    """Features from `body`, then a linear `head` to the class logits."""

    body: nn.Sequential
    head: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinyCnn(Classifier):
    """Two strided convolutions: the cheapest member."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, 16, 2), _conv(16, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(32, CLASSES)


class MobileNetLike(Classifier):
    """Depthwise-separable blocks."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, 32, 2)]
        for cin, cout, stride in [
            (32, 64, 1),
            (64, 128, 2),
            (128, 128, 1),
            (128, 256, 2),
            (256, 256, 2),
        ]:
            layers += [_conv(cin, cin, stride, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(256, CLASSES)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.convs(x))


class SmallResNet(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, 16, 2),
            _Residual(16),
            _conv(16, 32, 2),
            _Residual(32),
            _conv(32, 64, 2),
            _Residual(64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, CLASSES)


class VggLike(Classifier):
    """Full-resolution 3×3 convolutions: the dearest member."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, 16),
            _conv(16, 16),
            nn.MaxPool2d(2),
            _conv(16, 32),
            _conv(32, 32),
            nn.MaxPool2d(2),
            _conv(32, 64),
            nn.MaxPool2d(2),
            _conv(64, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, CLASSES)


ARCHITECTURES: dict[str, type[Classifier]] = {
    "tiny": TinyCnn,
    "mobile": MobileNetLike,
    "resnet": SmallResNet,
    "vgg": VggLike,
}


@torch.no_grad()
def calibrate(model: Classifier, seed: int, image: tuple[int, ...] = IMAGE) -> Classifier:
    """Rescale the head so that logits on random images are centred with std LOGIT_STD."""
    model.eval()
    images = torch.rand(64, *image, generator=torch.Generator().manual_seed(seed))
    standardise_head(model.head, model.body(images))
    return model


@torch.no_grad()
def standardise_head(head: nn.Linear, features: torch.Tensor, logit_std: float = LOGIT_STD) -> None:
    """Make `head` see standardised features: w' = w / std · k and b' = -w'·mean, with k
    chosen so that the logits' spread over this sample of features is `logit_std`."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    weight = head.weight / std
    weight *= logit_std / ((features - mean) @ weight.T).std()
    head.weight.copy_(weight)
    head.bias.copy_(-(weight @ mean))


SPEC = """\
# The benchmark ensemble: four image classifiers of very different cost on 3x96x96 inputs.
name: vision
members:
  - name: tiny
    model: models/tiny.onnx
  - name: mobile
    model: models/mobile.onnx
  - name: resnet
    model: models/resnet.onnx
  - name: vgg
    model: models/vgg.onnx
combine:
  rule: mean
  transform: softmax
max_batch_size: 16
"""


def write_example(out_dir: str | Path, runtime: str = "onnxruntime") -> Path:
    """The ensemble as ONNX files, or (`runtime="torch"`) as TorchScript files served by torch,
    the same calibrated weights either way."""
    if runtime == "torch":
        return write_calibrated(out_dir, dict(ARCHITECTURES), IMAGE, torch_spec(), torchscript=True)
    return write_calibrated(out_dir, dict(ARCHITECTURES), IMAGE, SPEC)


def torch_spec(spec_text: str = SPEC, image: tuple[int, ...] = IMAGE) -> str:
    """`spec_text` with every member a TorchScript file served by torch."""
    shape = f"[{', '.join(map(str, image))}]"
    return re.sub(
        r"    model: models/(\w+)\.onnx\n",
        rf"    model: models/\1.pt\n    example_input: {shape}\n    runtime: torch\n",
        spec_text,
    )


def write_calibrated(
    out_dir: str | Path,
    architectures: dict[str, Callable[[], Classifier]],
    image: tuple[int, ...],
    spec_text: str,
    torchscript: bool = False,
) -> Path:
    """Build each model with seed = its position, calibrate it, export it to
    `out_dir/models/<name>.onnx` (or trace it to `<name>.pt`), and write
    `out_dir/ensemble.yaml`."""
    out_dir = Path(out_dir)
    for seed, (name, make) in enumerate(architectures.items()):
        torch.manual_seed(seed)
        model = calibrate(make(), seed, image)
        example = torch.zeros(1, *image)
        if torchscript:
            (out_dir / "models").mkdir(parents=True, exist_ok=True)
            torch.jit.save(torch.jit.trace(model, example), str(out_dir / "models" / f"{name}.pt"))
        else:
            export_onnx(model, out_dir / "models" / f"{name}.onnx", example=example)
    spec = out_dir / "ensemble.yaml"
    spec.write_text(spec_text)
    return spec


if __name__ == "__main__":
    # python -m tritongen.examples.vision OUT_DIR [torch]
    runtime = "torch" if sys.argv[2:] == ["torch"] else "onnxruntime"
    print(write_example(sys.argv[1] if len(sys.argv) > 1 else "examples/vision", runtime))
