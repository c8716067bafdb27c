"""The explorer's pictures: each item's thumbnail and one overlay per map, written beside the page.

Each item gets one file, ``items/<id // 1000>/<id>.png``: a strip of equal
panels side by side, the image first (when the images were read), then the
overlay of each of the run's maps in the manifest's order; the page shows one
panel at a time. One file per item, not one per picture, keeps the audit's
writing (and a browser's requests) to one per item. The files are written in
a staging folder that replaces ``items/`` only when the audit finishes
(:meth:`PictureWriter.commit`): a killed audit leaves the previous pictures or
the new ones, never a mix. The pictures are small (:data:`THUMB` pixels on the
longer side at most), so a page of them loads fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from camlens.audit.png import blend, encode_png, to_uint8
from camlens.core.ops import minmax_normalize, upsample

__all__ = ["ITEMS", "THUMB", "PictureWriter", "display", "item_picture"]

#: the folder of the item pictures, beside index.html.
ITEMS = "items"
#: the longest side of a thumbnail, in pixels.
THUMB = 112


def item_picture(item_id: int) -> str:
    """The item's strip of pictures, relative to the audit folder."""
    return f"{ITEMS}/{item_id // 1000}/{item_id}.png"


def display(images: Tensor) -> Tensor:
    """Images ``(N, C, H, W)`` as the model saw them -> RGB ``(N, 3, h, w)`` in [0, 1], at most :data:`THUMB` a side.

    Values already in [0, 1] are shown as they are; others (normalized inputs)
    are min-max scaled per image. One channel becomes grey; more than three: the first three.
    """
    x = images.float()
    if x.shape[1] not in (1, 3):
        x = x[:, :1] if x.shape[1] < 3 else x[:, :3]
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        lo = x.flatten(1).amin(dim=1)[:, None, None, None]
        hi = x.flatten(1).amax(dim=1)[:, None, None, None]
        x = (x - lo) / (hi - lo).clamp(min=1e-12)
    h, w = x.shape[-2:]
    scale = THUMB / max(h, w)
    if scale < 1:
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class PictureWriter:
    """Writes thumbnails and overlays into a staging folder of ``out``; :meth:`commit` puts them in place.

    The strips are made, encoded and written by ``workers`` threads while the caller reads on (torch's
    kernels, zlib and file writes release the GIL), at most ``2 * workers`` batches ahead of them.
    """

    def __init__(self, out: Path, n_maps: int, workers: int = 1) -> None:
        self.out = out
        self.n_maps = n_maps
        self.stage = Path(tempfile.mkdtemp(prefix=f".{ITEMS}.", dir=out))
        self.made: set[int] = set()
        self.has_images = False
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="camlens-audit-pictures")
        self._pending: deque[Future[None]] = deque()

    def write(self, ids: Tensor, images: Tensor | None, maps: dict[str, Tensor]) -> None:
        """One batch: ``images`` from :func:`display` or ``None`` (overlays on black), ``maps`` key -> ``(n, h, w)``."""
        self.has_images = self.has_images or images is not None
        names = []
        for item_id in ids.tolist():
            if item_id // 1000 not in self.made:
                (self.stage / str(item_id // 1000)).mkdir()
                self.made.add(item_id // 1000)
            names.append(os.path.join(self.stage, item_picture(item_id).partition("/")[2]))
        while len(self._pending) >= 2 * self.workers:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(_write_strips, names, images, list(maps.values())))

    def commit(self) -> None:
        """Wait for the pictures, then replace ``out/items`` by them (the old folder is removed after the swap).

        Raises:
            OSError: a picture could not be written (the first such error).
        """
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        final = self.out / ITEMS
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{ITEMS}.old.", dir=self.out))
            os.replace(final, old / ITEMS)
        os.replace(self.stage, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Stop writing and remove the staging folder (the audit failed; after :meth:`commit` there is none)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        shutil.rmtree(self.stage, ignore_errors=True)


def _write_strips(names: list[str], images: Tensor | None, maps: list[Tensor]) -> None:
    """Write each item's strip (its image, then its overlay by each map) as a PNG file at ``names[i]``."""
    rgb = images if images is not None else torch.zeros((len(names), 3, *maps[0].shape[-2:]))
    size = tuple(rgb.shape[-2:])
    panels = [rgb] if images is not None else []
    for m in maps:
        heat = minmax_normalize(upsample(torch.nan_to_num(m.float()).clamp(min=0)[:, None], size))[:, 0]
        panels.append(blend(rgb, heat))
    strips = to_uint8(torch.cat(panels, dim=3))
    for row, name in enumerate(names):
        with open(name, "wb") as f:
            f.write(encode_png(strips[row], level=1))
