"""Colormaps, overlays and figures: the only place where tensors become numpy arrays and pictures.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot,
no global state, no display needed) and saved through a temporary file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from camlens._util.optional import optional_import
from camlens.errors import InputError

__all__ = [
    "Panel",
    "check_colormap",
    "colorize",
    "explanation_figure",
    "figure_bytes",
    "grid_figure",
    "new_figure",
    "overlay",
    "save_figure",
]


def _mpl() -> tuple[Any, Any]:
    """matplotlib and its ``Figure`` class, imported on first use (the ``plot`` extra)."""
    matplotlib = optional_import("matplotlib", "plot", "figures")
    return matplotlib, optional_import("matplotlib.figure", "plot", "figures").Figure


def new_figure(figsize: tuple[float, float], *, layout: str | None = "tight") -> Any:
    """An empty matplotlib ``Figure`` of ``figsize`` inches (no pyplot, nothing global is touched).

    Raises:
        ImportError: matplotlib is not installed (with the extra to install).
    """
    _, Figure = _mpl()
    return Figure(figsize=figsize, layout=layout)


def check_colormap(name: str) -> str:
    """``name`` if matplotlib knows the colormap, else an :class:`InputError` with some choices."""
    matplotlib, _ = _mpl()
    if name not in matplotlib.colormaps:
        some = "jet, inferno, viridis, magma, turbo, gray"
        raise InputError(f"colormap={name!r} is not a matplotlib colormap; try one of {some}")
    return name


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=np.float32)


def colorize(heatmap: Tensor | np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map ``(H, W)`` with values in [0, 1] as RGB ``(H, W, 3)`` float in [0, 1]."""
    matplotlib, _ = _mpl()
    h = np.clip(_np(heatmap), 0.0, 1.0)
    return matplotlib.colormaps[check_colormap(cmap)](h)[..., :3]


def overlay(
    image: Tensor | np.ndarray, heatmap: Tensor | np.ndarray, cmap: str = "jet", alpha: float = 0.5
) -> np.ndarray:
    """Blend a colorized map over an image: ``(1 - alpha) * image + alpha * colorize(heatmap)``.

    Args:
        image: ``(H, W)`` grayscale or ``(3, H, W)`` / ``(H, W, 3)`` RGB, values in [0, 1].
        heatmap: ``(H, W)`` in [0, 1], the image's size.
        alpha: the map's weight, in [0, 1].

    Returns:
        RGB ``(H, W, 3)`` float in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha={alpha!r} must be in [0, 1]")
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    colored = colorize(heatmap, cmap)
    if img.shape != colored.shape:
        raise InputError(f"image of shape {img.shape[:2]} and heatmap of shape {colored.shape[:2]} differ; "
                         "upsample the map to the image size (BaseCAM does by default)")
    return np.clip((1.0 - alpha) * np.clip(img, 0, 1) + alpha * colored, 0.0, 1.0)


@dataclass
class Panel:
    """One explained target of one image: class name, probability and its maps by layer ``(H, W)``."""

    label: str
    probability: float
    maps: Mapping[str, Tensor]


def explanation_figure(
    image: Tensor,
    panels: Sequence[Panel],
    title: str,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Any:
    """Per image: for each layer (row), the image, then heatmap (with colour bar) and overlay per target.

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` in [0, 1].
        panels: one per explained target (one for the predicted class, k for top-k).
        title: the figure's title, e.g. true and predicted class with probability.

    Returns:
        A matplotlib ``Figure``.
    """
    _, Figure = _mpl()
    img = _np(image).reshape(_np(image).shape[-2:])
    layers = list(panels[0].maps)
    cols = 1 + 2 * len(panels)
    width, height = 2.3 * cols + 0.4, 2.3 * len(layers) + 0.6
    fig = Figure(figsize=(width, height))  # fixed margins: constrained layout triples the save time
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.6 / height,
                        wspace=0.15, hspace=0.12)
    axes = fig.subplots(len(layers), cols, squeeze=False)
    for r, layer in enumerate(layers):
        axes[r, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title("image" if r == 0 else "", fontsize=9)
        axes[r, 0].set_ylabel(layer, fontsize=10)
        for j, p in enumerate(panels):
            h = _np(p.maps[layer])
            ax_h, ax_o = axes[r, 1 + 2 * j], axes[r, 2 + 2 * j]
            im = ax_h.imshow(h, cmap=cmap, vmin=0, vmax=1)
            fig.colorbar(im, ax=ax_h, fraction=0.046, pad=0.03)
            ax_o.imshow(overlay(img, h, cmap, alpha))
            if r == 0:
                ax_h.set_title(f"{p.label} ({p.probability:.2f})", fontsize=9)
                ax_o.set_title("overlay", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / height)
    return fig


def grid_figure(
    images: Sequence[Tensor],
    maps: Sequence[Mapping[str, Tensor]],
    titles: Sequence[str],
    cmap: str = "jet",
    alpha: float = 0.5,
    highlight: Sequence[bool] | None = None,
) -> Any:
    """Many images at once: a column per image, the image on top and its overlay per layer below.

    Args:
        images: N images ``(1, H, W)``; maps: N dicts layer -> ``(H, W)``; titles: N column titles.
        highlight: N flags; flagged titles are drawn in red (e.g. wrong predictions).

    Returns:
        A matplotlib ``Figure``.
    """
    _, Figure = _mpl()
    layers = list(maps[0])
    n = len(images)
    width, height = 1.25 * n + 0.6, 1.25 * (1 + len(layers)) + 0.5
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.45 / height,
                        wspace=0.06, hspace=0.06)
    axes = fig.subplots(1 + len(layers), n, squeeze=False)
    for c, (image, m, t) in enumerate(zip(images, maps, titles, strict=True)):
        img = _np(image).reshape(_np(image).shape[-2:])
        axes[0, c].imshow(img, cmap="gray", vmin=0, vmax=1)
        red = highlight is not None and highlight[c]
        axes[0, c].set_title(t, fontsize=7, color="red" if red else "black")
        for r, layer in enumerate(layers, start=1):
            axes[r, c].imshow(overlay(img, m[layer], cmap, alpha))
    axes[0, 0].set_ylabel("image", fontsize=8)
    for r, layer in enumerate(layers, start=1):
        axes[r, 0].set_ylabel(layer, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 100) -> bytes:
    """The figure encoded as ``fmt`` bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save a figure as PNG through a temporary file + rename; returns the path."""
    from camlens._util.files import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig, "png", dpi))
    return path
