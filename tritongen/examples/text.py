"""The text-classification ensemble: three small transformer encoders of different depth and
width, each taking `input_ids` and `attention_mask` (INT64, SEQUENCE tokens), 4 classes.

Plain torch with random weights (no download); each head is calibrated on random token
sequences of random lengths so that its logits spread (std ≈ LOGIT_STD) and its softmax varies
with the input, as in `tritongen.examples.vision`. Padding is masked: a token past the mask
changes nothing, and a mask of zeros gives the head's bias, never NaN.

    python -m tritongen.examples.text OUT_DIR   # writes OUT_DIR/ensemble.yaml and models/

`small`, `medium` and `deep` are also `module:function` references a spec can use directly
(PyTorch members): `model: tritongen.examples.text:small`.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from tritongen.examples.vision import standardise_head

VOCAB = 1000
SEQUENCE = 32
CLASSES = 4
LOGIT_STD = 2.0
MASK_BIAS = -1e4  # added to the scores of padded keys: finite, so a row of padding is not NaN


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        rows, tokens, width = h.shape
        q, k, v = (
            part.reshape(rows, tokens, self.heads, width // self.heads).transpose(1, 2)
            for part in self.qkv(h).chunk(3, dim=-1)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads) + bias
        mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(rows, tokens, width)
        return self.out(mixed)


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a GELU MLP, each residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.norm1(h), bias)
        return h + self.mlp(self.norm2(h))


class Encoder(nn.Module):
    """Token and position embeddings, `depth` blocks, masked mean pooling, a linear head."""

    def __init__(self, depth: int, width: int, heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Parameter(torch.randn(SEQUENCE, width) * 0.1)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        h = self.tokens(input_ids) + self.positions
        bias = (1.0 - mask)[:, None, None, :] * MASK_BIAS
        for block in self.blocks:
            h = block(h, bias)
        pooled = (self.norm(h) * mask[..., None]).sum(dim=1)
        return pooled / mask.sum(dim=1, keepdim=True).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))


ARCHITECTURES = {  # name: (depth, width, heads)
    "small": (1, 64, 2),
    "medium": (2, 96, 4),
    "deep": (4, 128, 4),
}


def random_tokens(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, and masks of random lengths (1..SEQUENCE) padded at the end."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, SEQUENCE), generator=generator)
    lengths = torch.randint(1, SEQUENCE + 1, (rows, 1), generator=generator)
    mask = (torch.arange(SEQUENCE)[None, :] < lengths).to(torch.int64)
    return ids * mask, mask


@torch.no_grad()
def calibrate(model: Encoder, seed: int) -> Encoder:
    """Rescale the head so that logits on random sequences are centred with std LOGIT_STD."""
    model.eval()
    standardise_head(model.head, model.features(*random_tokens(128, seed)), LOGIT_STD)
    return model


def build(name: str) -> Encoder:
    """The named member, with its fixed seed: the same weights every time."""
    seed = list(ARCHITECTURES).index(name)
    torch.manual_seed(seed)
    return calibrate(Encoder(*ARCHITECTURES[name]), seed)


def small() -> Encoder:
    return build("small")


def medium() -> Encoder:
    return build("medium")


def deep() -> Encoder:
    return build("deep")


def export_onnx(model: nn.Module, path: Path) -> None:
    """input_ids, attention_mask [batch, SEQUENCE] int64 -> logits [batch, CLASSES]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = random_tokens(2, seed=99)
    names = ["input_ids", "attention_mask", "logits"]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=names[:2],
            output_names=names[2:],
            dynamic_axes={n: {0: "batch"} for n in names},
            opset_version=17,
            dynamo=False,
        )


SPEC = f"""\
# The text ensemble: three transformer encoders, mean of their softmax outputs.
name: text
members:
  - name: small
    model: models/small.onnx
  - name: medium
    model: models/medium.onnx
  - name: deep
    model: models/deep.onnx
combine:
  rule: mean
  transform: softmax
max_batch_size: 16
input_values:                 # what tritongen feeds when it makes inputs (profile, warm-up, bench)
  input_ids: {{range: [0, {VOCAB}]}}
  attention_mask: {{value: 1}}
"""


def write_example(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    for name in ARCHITECTURES:
        export_onnx(build(name), out_dir / "models" / f"{name}.onnx")
    spec = out_dir / "ensemble.yaml"
    spec.write_text(SPEC)
    return spec


if __name__ == "__main__":
    print(write_example(sys.argv[1] if len(sys.argv) > 1 else "examples/text"))
