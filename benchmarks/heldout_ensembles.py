"""Ensembles nobody tuned the serving model on, generated from a seed: CNNs of varied depth,
width and stride; MLPs; transformer encoders taking `input_ids` + `attention_mask`; mixes of
CNNs and MLPs on one image. 2-8 members whose per-sample costs span about 0.05 to 15 ms of one
core, the dearest at least 10x the cheapest. Plain torch with random weights, calibrated like
the examples, exported to ONNX: nothing is downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tritongen.examples import text
from tritongen.examples.digits import export_onnx
from tritongen.examples.vision import CLASSES, Classifier, _conv, calibrate

IMAGE = (3, 64, 64)
FAMILIES = ("cnn", "mlp", "text", "mix")


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # cnn | mlp | text
    size: float  # 1 (cheapest) .. ~300 (dearest): scales width and depth


class Cnn(Classifier):
    def __init__(self, depth: int, width: int, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, width, stride)]
        cin = width
        for stage in range(depth):
            cout = min(4 * width, width * 2 ** (stage // 2))
            layers += [_conv(cin, cout), nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, CLASSES)


class Mlp(Classifier):
    def __init__(self, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        cin = IMAGE[0] * IMAGE[1] * IMAGE[2]
        for width in hidden:
            layers += [nn.Linear(cin, width), nn.ReLU()]
            cin = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, CLASSES)


HEAVY_FLOOR = 40.0  # a heavy ensemble's cheapest size: about 1 ms per sample of one core
HEAVY_SPAN = 1.15  # and its dearest 10-14x that


def draw_members(
    seed: int, quick: bool = False, max_members: int = 8, heavy: bool = False
) -> tuple[str, list[Member]]:
    """The family and members of ensemble `seed`: sizes log-uniform, the first the cheapest
    and the last 10-500x it; at most `max_members` (a budgeted run). `heavy`: every member
    about 1 ms per sample or more, the dearest 10-14x the cheapest."""
    rng = random.Random(seed)
    family = "mlp" if quick else rng.choice(FAMILIES)
    count = 2 if quick else min(max_members, rng.randint(2, 8))
    span, floor = (HEAVY_SPAN, HEAVY_FLOOR) if heavy else (1.6 if quick else 2.7, 1.0)
    top = 10 ** rng.uniform(1.0, span)
    middle = [10 ** rng.uniform(0, span) for _ in range(count - 2)]
    sizes = [floor * s for s in [1.0, *middle, top]]
    kinds = {"cnn": ["cnn"], "mlp": ["mlp"], "text": ["text"], "mix": ["cnn", "mlp"]}[family]
    members = [Member(f"m{i}_{k}", k, s) for i, s in enumerate(sizes) for k in [rng.choice(kinds)]]
    return family, members


def build(member: Member, seed: int) -> nn.Module:
    """The member's torch module, calibrated (its logits spread for random inputs)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    s = member.size  # widths and depths grow so that the cost grows about as the size
    if member.kind == "cnn":
        stride = 1 if s >= 100 or (s >= 30 and rng.random() < 0.5) else 2
        depth = min(5, 1 + round(s**0.3))
        return calibrate(Cnn(depth, max(4, round(6 * s**0.4)), stride), seed, IMAGE)
    if member.kind == "mlp":
        width = round(60 * s**0.6)
        return calibrate(Mlp([width] * min(3, 1 + round(s**0.2))), seed, IMAGE)
    heads = 2 if s < 10 else 4
    depth = min(6, 1 + round(s**0.3))
    return text.calibrate(text.Encoder(depth, heads * round(8 * s**0.4), heads), seed)


def write_ensemble(
    seed: int, out_dir: Path, quick: bool = False, max_members: int = 8, heavy: bool = False
) -> tuple[Path, str]:
    """Export every member of ensemble `seed` to `out_dir/models` and write its spec."""
    family, members = draw_members(seed, quick, max_members, heavy)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"name: heldout_{seed}", "members:"]
    for index, member in enumerate(members):
        path = out_dir / "models" / f"{member.name}.onnx"
        model = build(member, seed * 100 + index)
        if member.kind == "text":
            text.export_onnx(model, path)
        else:
            export_onnx(model, path, example=torch.zeros(1, *IMAGE))
        lines += [f"  - name: {member.name}", f"    model: models/{member.name}.onnx"]
    lines += ["combine:", "  rule: mean", "  transform: softmax", "max_batch_size: 16"]
    if family == "text":
        lines += [
            "input_values:",
            f"  input_ids: {{range: [0, {text.VOCAB}]}}",
            "  attention_mask: {value: 1}",
        ]
    spec = out_dir / "ensemble.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec, family
