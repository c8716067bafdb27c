"""Small models for the issue-7 tests (and the guide's figures): ViTs, a Swin-like net, a detector."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def hf_vit(num_labels: int = 5, seed: int = 0) -> nn.Module:
    """Hugging Face ViT with a small random configuration (nothing is downloaded)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    return ViTForImageClassification(cfg).eval()


class Block(nn.Module):
    """Pre-norm transformer block on (N, T, D) tokens."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return t + self.mlp(self.norm2(t))


class TinyViT(nn.Module):
    """A ViT with a class token and ``registers`` register tokens (DINOv2-style), head on the class token."""

    def __init__(self, image_size: int = 32, patch: int = 8, dim: int = 16, depth: int = 2,
                 registers: int = 4, classes: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        grid = (image_size // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.reg = nn.Parameter(torch.randn(1, registers, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, grid, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        n = t.shape[0]
        t = torch.cat([self.cls.expand(n, -1, -1), self.reg.expand(n, -1, -1), t], dim=1)
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


class ChannelsLastMix(nn.Module):
    """A Swin-like stage on (N, h, w, C): depthwise spatial mixing plus a channel MLP, channels-last in and out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.spatial = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        t = t + self.spatial(self.norm(t).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return t + self.mlp(t)


class SwinLike(nn.Module):
    """Patch embedding to channels-last (N, h, w, C), two stages, mean-pooled head (timm Swin's layout)."""

    def __init__(self, patch: int = 4, dim: int = 24, classes: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.stages = nn.Sequential(ChannelsLastMix(dim), ChannelsLastMix(dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.stages(self.embed(x).permute(0, 2, 3, 1))
        return self.head(t.mean(dim=(1, 2)))


class TinyDetector(nn.Module):
    """Detector-shaped: a conv backbone, one box (x1, y1, x2, y2) and K class logits per feature cell.

    Returns ``{"boxes": (N, M, 4), "logits": (N, M, K)}`` with ``M = h * w``;
    each cell's box is centred on the cell, its size predicted.
    """

    def __init__(self, classes: int = 2, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=stride, padding=1), nn.ReLU())
        self.box = nn.Conv2d(8, 2, 1)
        self.cls = nn.Conv2d(8, classes, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.backbone(x)
        _, _, h, w = f.shape
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx = ((xs + 0.5) * self.stride).flatten().to(x.dtype)
        cy = ((ys + 0.5) * self.stride).flatten().to(x.dtype)
        size = torch.nn.functional.softplus(self.box(f)).flatten(2) * self.stride * 2  # (N, 2, M)
        boxes = torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2], -1)
        return {"boxes": boxes, "logits": self.cls(f).flatten(2).transpose(1, 2)}


def tiny_vit() -> TinyViT:
    """A model factory (``'beyond_models:tiny_vit'``): a TinyViT with the same weights on every call."""
    from testmodels import seeded

    return seeded(TinyViT)
