"""Photos explained by ``camlens explain``: figures, overlays of the photo's own size, raw maps and one page.

A :class:`PhotoResult` holds one image's maps on the model's input and the
:class:`~camlens.preprocess.Geometry` that puts them back on the photo;
everything drawn here goes through :func:`camlens.viz.figures.overlay` (or
:func:`~camlens.viz.figures.signed_picture` for maps with channels).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from camlens._util.files import atomic_write_bytes, atomic_write_text
from camlens._util.optional import optional_import

if TYPE_CHECKING:
    from camlens.preprocess import Geometry, Preprocess

__all__ = [
    "PhotoResult",
    "grid_of",
    "output_stems",
    "photo_figure",
    "run_page",
    "thumbnail",
    "title",
    "write_maps",
    "write_overlays",
]

#: the longest side, in pixels, of an image in the run's grid.
GRID_PIXELS = 160
#: the most images one grid shows (a column each).
GRID_IMAGES = 32
#: names the run writes beside the per-image figures (an image of that stem gets a suffix instead).
RESERVED = frozenset({"grid", "explain", "overlays", "maps"})


def output_stems(stems: Sequence[str]) -> list[str]:
    """Unique output names that start with each image's stem: a repeated or reserved stem gets ``-2``, ``-3``, ..."""
    seen: set[str] = set(RESERVED)
    out = []
    for stem in stems:
        name, n = stem, 1
        while name in seen:
            n += 1
            name = f"{stem}-{n}"
        seen.add(name)
        out.append(name)
    return out


def _safe(text: str, limit: int = 60) -> str:
    """``text`` as part of a file name: runs of other characters than letters, digits, ``.+-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")[:limit] or "_"


@dataclass
class PhotoResult:
    """One image explained.

    Attributes:
        name: the output name (the file's stem, made unique).
        source: the file, or which dataset item.
        photo: what the maps are drawn on: a PIL image or a ``(C, H, W)`` tensor in [0, 1].
        geometry: where the model's input lies on the photo.
        label: the true class, ``-1`` when unknown.
        pred, pred_prob: the predicted class and its softmax probability.
        classes, probs: the K explained classes and their probabilities.
        maps: ``"method · layer"`` -> ``(K, h, w)`` in [0, 1] or signed ``(K, C, h, w)``
            (guided backpropagation), on the model's input, on the CPU.
    """

    name: str
    source: str
    photo: Any
    geometry: Geometry
    label: int
    pred: int
    pred_prob: float
    classes: list[int]
    probs: list[float]
    maps: dict[str, Tensor] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the photo."""
        h, w = self.geometry.original
        return w, h

    def on_photo(self, key: str, size: tuple[int, int] | None = None) -> Tensor:
        """The maps of ``key`` on the photo, ``(K, [C,] H, W)``; at ``size`` ``(width, height)`` if given.

        NaN where the photo lies outside the model's input (a centre crop).
        """
        g = self.geometry
        if size is not None:
            g = type(g)((size[1], size[0]), g.resized, g.crop)  # the same resize and crop, seen at another scale
        return g.to_original(self.maps[key])


def _label(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def thumbnail(photo: Any, pixels: int) -> Any:
    """The photo as a PIL RGB image no larger than ``pixels`` on its longest side."""
    from camlens.viz.figures import rgb8

    Image = optional_import("PIL.Image", "plot", "figures")
    im = Image.fromarray(rgb8(photo), "RGB")
    if max(im.size) > pixels:
        im.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
    return im


def title(r: PhotoResult, class_names: Sequence[str]) -> str:
    """``"cat.jpg (451x300): predicted: tabby (0.61)"``, with the true class when known."""
    pred = f"predicted: {_label(class_names, r.pred)} ({r.pred_prob:.2f})"
    if r.label < 0:
        return f"{r.name}: {pred}"
    mark = "" if r.label == r.pred else "  [wrong]"
    return f"true: {_label(class_names, r.label)} · {pred}{mark}"


def photo_figure(r: PhotoResult, class_names: Sequence[str], cmap: str = "jet", alpha: float = 0.5) -> Any:
    """The image, then per ``method · layer`` its overlay; a row per explained class with its probability."""
    from camlens.viz.figures import FIGURE_PIXELS, Panel, explanation_figure

    thumb = thumbnail(r.photo, FIGURE_PIXELS)
    on = {key: r.on_photo(key, thumb.size) for key in r.maps}
    panels = [
        Panel(_label(class_names, c), p, {key: m[j] for key, m in on.items()})
        for j, (c, p) in enumerate(zip(r.classes, r.probs, strict=True))
    ]
    return explanation_figure(thumb, panels, title(r, class_names), cmap=cmap, alpha=alpha)


def grid_of(results: Sequence[PhotoResult], class_names: Sequence[str], cmap: str = "jet",
            alpha: float = 0.5) -> Any:  # fmt: skip
    """All images in one figure: a column per image, its overlay per ``method · layer`` (first class) below."""
    from camlens.viz.figures import grid_figure

    thumbs = [thumbnail(r.photo, GRID_PIXELS) for r in results]
    maps = [{key: r.on_photo(key, t.size)[0] for key in r.maps} for r, t in zip(results, thumbs, strict=True)]
    titles = [f"{r.name}\n→ {_label(class_names, r.pred)}" for r in results]
    wrong = [0 <= r.label != r.pred for r in results]
    return grid_figure(thumbs, maps, titles, cmap=cmap, alpha=alpha, highlight=wrong)


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_overlays(r: PhotoResult, class_names: Sequence[str], folder: Path, cmap: str = "jet",
                   alpha: float = 0.5) -> list[Path]:  # fmt: skip
    """Per ``method · layer`` and explained class, the overlay at the photo's own width and height.

    Named ``<stem>_<method>_<layer>_<class index>-<class name>.png`` (characters
    other than letters, digits and ``.+-`` become ``_``).
    """
    from camlens.viz.figures import map_picture

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in r.maps:
        method, _, layer = key.partition(" · ")
        on = r.on_photo(key)
        for j, c in enumerate(r.classes):
            name = _label(class_names, c)
            cls = str(c) if name == str(c) else f"{c}-{_safe(name, 40)}"
            path = folder / f"{r.name}_{_safe(method)}_{_safe(layer)}_{cls}.png"
            atomic_write_bytes(path, _png(map_picture(r.photo, on[j], cmap, alpha)))
            paths.append(path)
    return paths


def write_maps(r: PhotoResult, class_names: Sequence[str], folder: Path, preprocess: Preprocess | None,
               model: str) -> Path:  # fmt: skip
    """The raw maps of one image as ``<name>.safetensors``, with what maps them back onto the photo.

    Tensors: ``"<method>/<layer>"`` -> the maps on the model's input
    ``(K, h, w)`` (or ``(K, C, h, w)``), ``"classes"`` ``(K,)`` and ``"probs"``
    ``(K,)``. Metadata (JSON strings): ``geometry`` (:meth:`Geometry.to_dict`,
    for :meth:`Geometry.from_dict` and :meth:`~Geometry.to_original`),
    ``preprocess`` (:meth:`Preprocess.to_dict`; ``null`` for dataset items,
    which are the model's input as they are), ``source``, ``model``,
    ``class_names`` (of the K classes) and ``prediction``.
    """
    import torch

    st = optional_import("safetensors.torch", "cli", "--save-maps")
    tensors = {key.replace(" · ", "/"): m.contiguous().float() for key, m in r.maps.items()}
    tensors["classes"] = torch.tensor(r.classes, dtype=torch.int64)
    tensors["probs"] = torch.tensor(r.probs, dtype=torch.float32)
    meta = {
        "geometry": json.dumps(r.geometry.to_dict()),
        "preprocess": json.dumps(None if preprocess is None else preprocess.to_dict()),
        "source": r.source,
        "model": model,
        "class_names": json.dumps([_label(class_names, c) for c in r.classes]),
        "prediction": json.dumps({"class": r.pred, "name": _label(class_names, r.pred), "probability": r.pred_prob}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{r.name}.safetensors"
    atomic_write_bytes(path, st.save(tensors, metadata=meta))
    return path


def run_page(path: Path, heading: str, facts: Sequence[str], results: Sequence[PhotoResult],
             class_names: Sequence[str], figures: dict[str, bytes], grid: bytes | None) -> Path:  # fmt: skip
    """One self-contained HTML page of the run through :mod:`camlens.viz.html` (every value escaped)."""
    from camlens.viz import html as h

    rows = [
        [r.name, r.source, f"{r.size[0]}x{r.size[1]}", _label(class_names, r.pred), f"{r.pred_prob:.3f}",
         ", ".join(f"{_label(class_names, c)} ({p:.3f})" for c, p in zip(r.classes, r.probs, strict=True))]
        for r in results
    ]  # fmt: skip
    parts: list[h.Node] = [
        h.section("Run", h.bullets(facts)),
        h.section("Images", h.table(["image", "source", "size", "predicted", "probability", "explained"], rows)),
    ]
    if grid is not None:
        parts.append(h.section("All images", h.figure(grid, "each image and its overlays (first explained class)")))
    each = [h.figure(figures[r.name], title(r, class_names)) for r in results if r.name in figures]
    if each:
        parts.append(h.section("Each image", *each))
    atomic_write_text(path, h.page(heading, *parts))
    return path
