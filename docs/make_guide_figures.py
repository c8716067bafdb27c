"""Make the figures of docs/guide.md from the tests' small models.

Run:  PYTHONPATH=src:tests python docs/make_guide_figures.py   (about a minute on 2 busy CPU cores)

Each model (a small CNN, a ViT with a class token and 4 registers, a Swin-like
channels-last net) is trained for a few hundred steps on a synthetic task
whose answer is known: an 8x8 square of one colour anywhere on noise, the
class is its colour. A faithful map should light up the square. The maps are
made with layers=None (the automatic choice) and written as small PNGs.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import camlens  # noqa: E402
from camlens._util.files import atomic_write_bytes  # noqa: E402


def squares(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) noise with one 8x8 square anywhere; label = the square's colour (0 red, 1 green, 2 blue)."""
    x = torch.rand(n, 3, 32, 32, generator=gen) * 0.3
    y = torch.randint(0, 3, (n,), generator=gen)
    off = torch.randint(0, 25, (n, 2), generator=gen)
    for i in range(n):
        r, c = int(off[i, 0]), int(off[i, 1])
        x[i, y[i], r : r + 8, c : c + 8] += 0.7
    return x, y


def train(model: nn.Module, steps: int = 120, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        x, y = squares(32, gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from beyond_models import SwinLike, TinyViT

    torch.manual_seed(0)
    models = {
        "CNN": nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
        ),
        "ViT + 4 registers": TinyViT(registers=4, classes=3, patch=4, dim=32),
        "Swin-like (N,h,w,C)": SwinLike(classes=3),
    }
    x, y = squares(4, torch.Generator().manual_seed(123))
    fig, axes = plt.subplots(len(models), 5, figsize=(7.5, 1.6 * len(models)))
    for row, (title, model) in enumerate(models.items()):
        train(model)
        cam = camlens.GradCAM(model)  # layers=None: the automatic choice
        result = cam(x, target=y)
        layer = next(iter(result.maps))
        acc = (model(squares(256, torch.Generator().manual_seed(7))[0]).argmax(1) ==
               squares(256, torch.Generator().manual_seed(7))[1]).float().mean().item()
        axes[row, 0].text(0.0, 0.5, f"{title}\nauto layer: {layer}\nacc {acc:.0%}", fontsize=7, va="center")
        axes[row, 0].axis("off")
        for col in range(4):
            ax = axes[row, col + 1]
            ax.imshow(x[col].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.imshow(result.map[col].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Grad-CAM, layers=None, for the square's colour", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(HERE / "figures" / "guide_models.png", buf.getvalue())
    print("wrote", HERE / "figures" / "guide_models.png")


if __name__ == "__main__":
    main()
