"""A class's fixed pattern: pixels that are the same on every image of the class, unlike the other classes', and
not the image's background.

A mark, a watermark, a tag or a border stamped on a class's images is such a
pattern, and a map cannot draw it finer than its cells: when the audit flags
a region, the pattern found there is the box it reports (to the pixel),
instead of the map's box (to the cell). The images are summed per label as
the audit reads them (:class:`ImageMoments`): one pass, a few planes per
class, at most :data:`SIDE` pixels a side. A pixel the colour of the background
is not part of a pattern: where a class is always empty and the others are
not (the space above a sneaker) is the absence of the object, not a mark; so a
mark the colour of the background (a black square on Fashion-MNIST) is not
told apart, and the map's box is reported.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MAX_SPREAD", "MIN_DIFFERENCE", "SIDE", "ImageMoments"]

#: images larger than this a side are averaged down to it for the moments (the box is then this precise).
SIDE = 112
#: a pixel is fixed on a class when its standard deviation over the class's images (summed over channels) is at
#: most this share of the data's value range ...
MAX_SPREAD = 0.02
#: ... and the class's mean there differs from the other classes' mean by at least this share (largest channel).
MIN_DIFFERENCE = 0.1


class ImageMoments:
    """Per label: the number of images, their sum ``(C, h, w)``, the sum of their squares over channels ``(h, w)``,
    and how many of them hold the object at each pixel ``(h, w)``."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.sums: dict[int, Tensor] = {}
        self.squares: dict[int, Tensor] = {}
        self.present: dict[int, Tensor] = {}
        self.low = float("inf")
        self.high = float("-inf")
        self.input_size: tuple[int, int] | None = None

    def add(self, images: Tensor, labels: Tensor, objects: Tensor) -> None:
        """Add images ``(N, C, H, W)`` float with their labels ``(N,)`` and object masks ``(N, H, W)`` bool
        (:func:`camlens.audit.collect.object_mask`)."""
        h, w = images.shape[-2:]
        self.input_size = (int(h), int(w))
        scale = SIDE / max(h, w)
        x, obj = images.float(), objects.float()[:, None]
        if scale < 1:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x, obj = F.interpolate(x, size=size, mode="area"), F.interpolate(obj, size=size, mode="area")
        if x.numel():
            self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        for lab in labels.unique().tolist():
            sel = x[labels == lab]
            self.count[lab] = self.count.get(lab, 0) + len(sel)
            self.sums[lab] = sel.sum(dim=0) + self.sums.get(lab, 0.0)
            self.squares[lab] = sel.square().sum(dim=(0, 1)) + self.squares.get(lab, 0.0)
            self.present[lab] = obj[labels == lab].sum(dim=(0, 1)) + self.present.get(lab, 0.0)

    def fixed(self, label: int) -> Tensor | None:
        """Bool ``(h, w)``: the pixels fixed on class ``label`` (see :data:`MAX_SPREAD`) and on the object in most
        of its images; ``None`` when there is no other class to differ from."""
        n = self.count.get(label, 0)
        total = sum(self.count.values())
        if n == 0 or total == n:
            return None
        span = max(self.high - self.low, 1e-12)
        mean = self.sums[label] / n
        var = (self.squares[label] / n - mean.square().sum(dim=0)).clamp(min=0)
        others = (sum(self.sums.values()) - self.sums[label]) / (total - n)
        differs = (mean - others).abs().amax(dim=0) >= MIN_DIFFERENCE * span
        return (var.sqrt() <= MAX_SPREAD * span) & differs & (self.present[label] > n / 2)

    def pattern(self, label: int, near: list[int]) -> tuple[list[int], int] | None:
        """The fixed pattern of class ``label`` at the box ``near`` ``[x0, y0, x1, y1]`` (input pixels, end
        exclusive): ``(its box in input pixels, its number of pixels at the moments' size)``, or ``None``.

        The pattern is every fixed pixel connected (8 neighbours) to a fixed pixel inside ``near``: a mark
        that reaches out of the map's box is reported whole.
        """
        fixed = self.fixed(label)
        if fixed is None or self.input_size is None:
            return None
        gh, gw = fixed.shape
        sy, sx = self.input_size[0] / gh, self.input_size[1] / gw
        x0, y0, x1, y1 = near
        inside = torch.zeros_like(fixed)
        rows, cols = slice(int(y0 / sy), round(y1 / sy)), slice(int(x0 / sx), round(x1 / sx))
        inside[rows, cols] = fixed[rows, cols]
        if not bool(inside.any()):
            return None
        grown, fixed_f = inside.float()[None, None], fixed.float()[None, None]
        while True:
            more = F.max_pool2d(grown, 3, stride=1, padding=1) * fixed_f
            if bool((more == grown).all()):
                break
            grown = more
        ys, xs = grown[0, 0].nonzero(as_tuple=True)
        box = [int(int(xs.min()) * sx), int(int(ys.min()) * sy), round((int(xs.max()) + 1) * sx),
               round((int(ys.max()) + 1) * sy)]  # fmt: skip
        return box, len(ys)
