"""Tiny models shared by the tests: import them from here (``from testmodels import GapNet``)."""

from __future__ import annotations

import torch
from torch import nn


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear: the CAM architecture."""

    def __init__(self, c: int = 6, classes: int = 5, inplace: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace),
            nn.Conv2d(8, c, 3, padding=1), nn.ReLU(inplace=inplace),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class SmallConvNet(nn.Module):
    """The tutorial's shape in miniature: convs with ReLU, flatten, linear; BatchNorm optional."""

    def __init__(self, bn: bool = False, inplace: bool = False, size: int = 10) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.seq = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), norm(6), nn.ReLU(inplace=inplace),
            nn.Conv2d(6, 5, 3, padding=1), norm(5), nn.ReLU(inplace=inplace),
            nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(inplace=inplace),
            nn.Flatten(), nn.Linear(4 * size * size, 7),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


def hook_count(model: nn.Module) -> int:
    """All hooks on all modules of ``model`` (forward, pre-forward, backward)."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n
