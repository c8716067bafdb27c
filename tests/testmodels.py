"""Tiny models shared by the tests: import them from here (``from testmodels import GapNet``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset

from models import BasicBlock  # benchmarks/models.py: torchvision's BasicBlock

M = TypeVar("M", bound=nn.Module)



def write_factory(folder: Path, source: str, builder: str = "build", name: str = "models.py") -> str:
    """Write the Python ``source`` as ``folder/name`` and return the model spec ``"path:builder"`` that names it."""
    path = folder / name
    path.write_text(source)
    return f"{path}:{builder}"

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


def bn_convnet(size: int = 8) -> SmallConvNet:
    """Float32, eval mode, BatchNorm with non-trivial running statistics (so folding changes the weights)."""
    model = SmallConvNet(bn=True, size=size)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def hook_count(model: nn.Module) -> int:
    """All hooks on all modules of ``model`` (forward, pre-forward, backward)."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n


class SmallResNet(nn.Module):
    """torchvision's ResNet layout in miniature (one block per stage), for 3x32x32 inputs: layer4 is 4x4."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (8, 16, 24, 32)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, w in enumerate(widths):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def seeded(build: Callable[[], M], seed: int = 0) -> M:
    """``build()`` in eval mode under ``torch.manual_seed(seed)``, leaving the global RNG as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


def small_resnet() -> SmallResNet:
    """A model factory (``'testmodels:small_resnet'``): the same weights on every call."""
    return seeded(SmallResNet)


class RGB32(Dataset):
    """``n`` fixed random 3x32x32 images with labels ``i % 10``, and no class names."""

    def __init__(self, n: int = 24) -> None:
        self.images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 10


def rgb32_dataset() -> RGB32:
    """A dataset factory (``'testmodels:rgb32_dataset'``)."""
    return RGB32()
