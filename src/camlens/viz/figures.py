"""Colormaps, overlays and figures: the only place where tensors become numpy arrays and pictures.

:func:`overlay` (exported as ``camlens.overlay``) draws one map on one image of
any kind and size; every figure here is made of its output. Figures are built
with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state, no
display needed) and saved through a temporary file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
    "map_label",
    "map_picture",
    "new_figure",
    "overlay",
    "resize_map",
    "rgb8",
    "save_figure",
    "signed_picture",
]

#: Pillow modes holding more than 8 bits per channel, read on a 0..65535 scale.
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
#: the longest side, in pixels, of an image drawn in a figure cell (larger photos are shrunk first).
FIGURE_PIXELS = 448
#: ITU-R 601 luma weights: how a greyed (no value) region and a gray photo are drawn.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def map_label(key: str) -> str:
    """A figure's label for the map ``"method · layer"``: two lines, or the method alone when the map is named after
    it (FullGrad's, from every bias layer, is ``"fullgrad · fullgrad"``)."""
    method, _, layer = key.partition(" · ")
    return method if layer in ("", method) else f"{method}\n{layer}"


def _mpl() -> tuple[Any, Any]:
    """matplotlib and its ``Figure`` class, imported on first use (the ``plot`` extra)."""
    matplotlib = optional_import("matplotlib", "plot", "figures")
    return matplotlib, optional_import("matplotlib.figure", "plot", "figures").Figure


def _pil() -> Any:
    return optional_import("PIL.Image", "plot", "overlays")


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


@lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    """The colormap as a ``(256, 3)`` uint8 table."""
    matplotlib, _ = _mpl()
    rgba = matplotlib.colormaps[check_colormap(name)](np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=np.float32)


def colorize(heatmap: Tensor | np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map ``(H, W)`` with values in [0, 1] as RGB ``(H, W, 3)`` float in [0, 1] (values clipped)."""
    matplotlib, _ = _mpl()
    h = np.clip(_np(heatmap), 0.0, 1.0)
    return matplotlib.colormaps[check_colormap(cmap)](h)[..., :3]


def _on_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Float ``(H, W, C)`` colour in 0..255 composited over white with alpha ``a`` in [0, 1] ``(H, W)``."""
    return rgb * a[..., None] + 255.0 * (1.0 - a[..., None])


def _pil_rgb8(im: Any) -> np.ndarray:
    """A Pillow image of any mode as ``(H, W, 3)`` uint8: alpha over white, 16-bit data scaled, not clipped."""
    if im.mode in _WIDE_MODES or im.mode == "F":
        arr = np.asarray(im).astype(np.float32)
        arr = arr * np.float32(255.0 / 65535.0) if im.mode in _WIDE_MODES else arr
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        return np.round(_on_white(rgba[..., :3], rgba[..., 3] / 255.0)).astype(np.uint8)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _array_rgb8(arr: np.ndarray, what: str) -> np.ndarray:
    """An ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` array (C in 1..4) of uint8, uint16, bool or [0, 1] floats."""
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{what} of shape {tuple(arr.shape)} is not an image; give (H, W), (H, W, C) or "
                         "(C, H, W) with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels")  # fmt: skip
    if arr.dtype == np.uint8:
        f = arr.astype(np.float32)
    elif arr.dtype == np.bool_:
        f = arr.astype(np.float32) * 255.0
    elif arr.dtype == np.uint16:
        f = arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float32)
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(f"{what} is a float image with values from {lo:.4g} to {hi:.4g}; float images must "
                             "lie in [0, 1] (divide a 0..255 image by 255, undo a mean/std normalization, "
                             "or give uint8)")  # fmt: skip
        f = np.clip(f, 0.0, 1.0) * 255.0
    else:
        raise InputError(f"{what} has dtype {arr.dtype}; give uint8, uint16, bool or float values in [0, 1]")
    channels = f.shape[-1]
    if channels in (2, 4):
        f = _on_white(f[..., :-1], f[..., -1] / 255.0)
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def rgb8(image: Any, what: str = "image") -> np.ndarray:
    """Any image as RGB ``(H, W, 3)`` uint8 for drawing.

    Args:
        image: a Pillow image of any mode (alpha composited on white, 16-bit
            data scaled from 0..65535); a numpy array ``(H, W)``, ``(H, W, C)``
            or ``(C, H, W)`` of uint8 (0..255, never clipped), uint16, bool or
            floats in [0, 1]; a tensor ``(C, H, W)``, ``(1, C, H, W)`` or
            ``(H, W)`` of the same value ranges.

    Raises:
        InputError: an unknown shape, dtype, or float values outside [0, 1].
    """
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)  # a tensor is channels-first
        if t.is_floating_point():
            t = t.float()
        return _array_rgb8(t.numpy(), what)
    if isinstance(image, np.ndarray):
        return _array_rgb8(image, what)
    if hasattr(image, "mode") and hasattr(image, "size"):
        return _pil_rgb8(image)
    raise InputError(f"{what} of type {type(image).__name__} is not an image; give a PIL image, a numpy array "
                     "or a (C, H, W) tensor")  # fmt: skip


def resize_map(heatmap: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., h, w)`` -> float32 ``(..., H, W)``, bilinear (antialiased when shrinking); NaN stays "no value".

    Values and validity are resized together (normalized interpolation): a pixel
    is NaN where less than half of its interpolation weight falls on valid values.
    """
    t = torch.as_tensor(_np(heatmap))
    if tuple(t.shape[-2:]) == tuple(size):
        return t.numpy()
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])
    valid = torch.isfinite(flat)
    both = torch.cat([torch.where(valid, flat, torch.zeros(())), valid.float()], dim=1)
    shrink = size[0] < t.shape[-2] or size[1] < t.shape[-1]
    r = F.interpolate(both, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    weight = r[:, 1:]
    out = torch.where(weight > 0.5, r[:, :1] / weight.clamp_min(1e-6), torch.full((), float("nan")))
    return out.reshape(*lead, *size).numpy()


def _check_map(m: np.ndarray) -> None:
    finite = m[np.isfinite(m)]
    if np.isinf(m).any() or (finite.size and (finite.min() < -1e-4 or finite.max() > 1.0 + 1e-4)):
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"),) * 2
        raise InputError(f"map values must lie in [0, 1] (NaN = no value); got {lo:.4g} to {hi:.4g}"
                         f"{' and infinities' if np.isinf(m).any() else ''}: min-max normalize it (camlens "
                         "methods do by default, normalize=True)")  # fmt: skip


def _greyed(photo: np.ndarray) -> np.ndarray:
    """The photo's luminance as float RGB: how a pixel without a map value is drawn."""
    return np.repeat((photo.astype(np.float32) @ _LUMA)[..., None], 3, axis=-1)


def overlay(image: Any, map: Tensor | np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> Any:
    """The map, colorized, blended over the image: ``(1 - alpha) * image + alpha * colormap(map)``.

    The image keeps its own size: the map is resized to it (bilinear). Where
    the map has no value (NaN, e.g. outside a centre crop) the image is shown
    greyed (its luminance) with no colour on it.

    Args:
        image: a Pillow image (any mode), a uint8 ``(H, W[, C])`` array (0..255,
            never clipped), a float array in [0, 1], or a tensor ``(C, H, W)``;
            gray or RGB (alpha is composited on white).
        map: ``(h, w)`` (or ``(1, h, w)``) values in [0, 1], NaN = no value,
            any size.
        colormap: a matplotlib colormap name.
        alpha: the map's weight, in [0, 1].

    Returns:
        An RGB ``PIL.Image.Image`` of the image's width and height.

    Raises:
        InputError: alpha outside [0, 1], an unknown colormap, an image or map
            of another shape or range.

    Example:
        >>> import numpy as np, camlens
        >>> photo = np.zeros((300, 451, 3), np.uint8)
        >>> camlens.overlay(photo, np.random.rand(7, 7)).size
        (451, 300)
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha={alpha!r} must be in [0, 1]")
    photo = rgb8(image)
    m = _np(map)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InputError(f"map of shape {tuple(m.shape)} is not one map (h, w); for maps with channels "
                         "(guided backpropagation) use camlens.viz.figures.signed_picture")  # fmt: skip
    _check_map(m)
    m = resize_map(m, photo.shape[:2])
    valid = np.isfinite(m)
    color = _lut(colormap)[np.round(np.where(valid, np.clip(m, 0.0, 1.0), 0.0) * 255.0).astype(np.intp)]
    blend = (1.0 - alpha) * photo.astype(np.float32) + alpha * color.astype(np.float32)
    out = np.where(valid[..., None], blend, _greyed(photo))
    return _pil().fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def signed_picture(image: Any, grads: Tensor | np.ndarray) -> Any:
    """Signed maps with channels (guided backpropagation) drawn as an image, at the image's size.

    ``0.5 + 0.5 * g / max|g|`` per pixel and channel: zero is mid-grey,
    positive brighter, negative darker; three channels as RGB, any other
    number as their mean in gray. Where ``g`` is NaN (no value) the image is
    shown greyed.

    Args:
        image: anything :func:`overlay` takes; only its size and the greyed
            no-value pixels come from it.
        grads: ``(C, h, w)`` signed values, any size.

    Returns:
        An RGB ``PIL.Image.Image`` of the image's width and height.
    """
    photo = rgb8(image)
    g = _np(grads)
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise InputError(f"grads of shape {tuple(g.shape)} are not (C, h, w)")
    g = g if g.shape[0] == 3 else np.nanmean(g, axis=0, keepdims=True) if np.isfinite(g).any() else g[:1]
    g = resize_map(g, photo.shape[:2])
    scale = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 0.0
    pic = 0.5 + 0.5 * g / scale if scale > 0 else np.where(np.isfinite(g), 0.5, g)
    pic = np.repeat(pic, 3, axis=0) if pic.shape[0] == 1 else pic
    pic = np.moveaxis(pic, 0, -1) * 255.0
    out = np.where(np.isfinite(pic).all(axis=-1, keepdims=True), pic, _greyed(photo))
    return _pil().fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def map_picture(image: Any, m: Tensor | np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> Any:
    """:func:`overlay` for one map ``(h, w)``, :func:`signed_picture` for maps with channels ``(C, h, w)``."""
    if m.ndim == 3:
        return signed_picture(image, m)
    return overlay(image, m, colormap, alpha)


def _thumbnail(image: Any) -> Any:
    """The image as a PIL RGB image no larger than :data:`FIGURE_PIXELS` on its longest side."""
    im = _pil().fromarray(rgb8(image), "RGB")
    if max(im.size) > FIGURE_PIXELS:
        im.thumbnail((FIGURE_PIXELS, FIGURE_PIXELS), _pil().Resampling.LANCZOS)
    return im


@dataclass
class Panel:
    """One explained target of one image: class name, probability and its maps by column.

    ``maps`` holds, per column (a layer, or ``"method · layer"``), a map ``(h, w)``
    in [0, 1] (NaN = no value), drawn with :func:`overlay`, or signed maps with
    channels ``(C, h, w)`` (also ``C = 1``), drawn with :func:`signed_picture`; any size.
    """

    label: str
    probability: float
    maps: Mapping[str, Tensor | np.ndarray]


def _cell(aspect: float, side: float) -> tuple[float, float]:
    """A figure cell's (width, height) in inches for an image of width / height ``aspect``."""
    return side * min(max(aspect, 0.4), 2.5), side


def _bare(axes: Any) -> None:
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)


def _colorbar(fig: Any, axes: Any, cmap: str) -> None:
    matplotlib, _ = _mpl()
    cm = optional_import("matplotlib.cm", "plot", "figures")
    mappable = cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    fig.colorbar(mappable, ax=list(axes.flat), fraction=0.025, pad=0.01)


def explanation_figure(
    image: Any,
    panels: Sequence[Panel],
    title: str,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Any:
    """One image explained: a row per target, the image then the overlay of each map (method x layer).

    Args:
        image: anything :func:`overlay` takes (PIL, uint8 or [0, 1] float
            array, tensor ``(C, H, W)``), gray or RGB, any size.
        panels: one per explained target (one for the predicted class, k for
            top-k), all with the same map columns; maps as in :class:`Panel`.
        title: the figure's title, e.g. true and predicted class with probability.

    Returns:
        A matplotlib ``Figure``.
    """
    _, Figure = _mpl()
    photo = _thumbnail(image)
    columns = list(panels[0].maps)
    cw, ch = _cell(photo.size[0] / photo.size[1], 2.2)
    cols, rows = 1 + len(columns), len(panels)
    width, height = cw * cols + 1.0, ch * rows + 0.9
    fig = Figure(figsize=(width, height))  # fixed margins: constrained layout triples the save time
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.6 / width, bottom=0.15 / height, top=1 - 0.85 / height,
                        wspace=0.05, hspace=0.12)
    axes = fig.subplots(rows, cols, squeeze=False)
    flat_maps = False
    for r, p in enumerate(panels):
        axes[r, 0].imshow(np.asarray(photo))
        axes[r, 0].set_ylabel(f"{p.label} ({p.probability:.2f})", fontsize=9)
        for c, key in enumerate(columns, start=1):
            m = p.maps[key]
            flat_maps = flat_maps or m.ndim == 2
            axes[r, c].imshow(np.asarray(map_picture(photo, m, cmap, alpha)))
            if r == 0:
                axes[r, c].set_title(map_label(key), fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    _bare(axes)
    if flat_maps:
        _colorbar(fig, axes, cmap)
    fig.suptitle(title, fontsize=10, y=1 - 0.2 / height)
    return fig


def grid_figure(
    images: Sequence[Any],
    maps: Sequence[Mapping[str, Tensor | np.ndarray]],
    titles: Sequence[str],
    cmap: str = "jet",
    alpha: float = 0.5,
    highlight: Sequence[bool] | None = None,
) -> Any:
    """Many images at once: a column per image, the image on top and its overlay per map below.

    Args:
        images: N images, anything :func:`overlay` takes, any sizes (each is
            drawn to fit a square cell).
        maps: N dicts column -> map ``(h, w)`` or ``(C, h, w)`` (as in :class:`Panel`),
            the same keys for every image; titles: N column titles.
        highlight: N flags; flagged titles are drawn in red (e.g. wrong predictions).

    Returns:
        A matplotlib ``Figure``.
    """
    _, Figure = _mpl()
    rows_of = list(maps[0])
    n = len(images)
    width, height = 1.25 * n + 0.6, 1.25 * (1 + len(rows_of)) + 0.5
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.45 / height,
                        wspace=0.06, hspace=0.06)
    axes = fig.subplots(1 + len(rows_of), n, squeeze=False)
    for c, (image, m, t) in enumerate(zip(images, maps, titles, strict=True)):
        photo = _thumbnail(image)
        axes[0, c].imshow(np.asarray(photo))
        red = highlight is not None and highlight[c]
        axes[0, c].set_title(t, fontsize=7, color="red" if red else "black")
        for r, key in enumerate(rows_of, start=1):
            axes[r, c].imshow(np.asarray(map_picture(photo, m[key], cmap, alpha)))
    axes[0, 0].set_ylabel("image", fontsize=8)
    for r, key in enumerate(rows_of, start=1):
        axes[r, 0].set_ylabel(map_label(key), fontsize=7)
    _bare(axes)
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
