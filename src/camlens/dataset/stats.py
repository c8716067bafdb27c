"""Per-item and per-class statistics: map mass inside the object, confidence, accuracy.

Mass inside the object (the "energy-based pointing game" of Score-CAM, Wang et
al. 2020, with the object's pixels as its box): for a non-negative map ``L``
upsampled to the image and the object mask ``M`` (nonzero pixels for
Fashion-MNIST's black background),

    mass(L, M) = sum_ij L_ij M_ij / sum_ij L_ij

The ratio and the object mask are the metrics' own
(:func:`camlens.metrics.pointing.energy_share`, the raw energy pointing game,
and :func:`camlens.metrics.pointing.object_mask`). A map that is zero
everywhere has no mass to place (0/0): its value is NaN, as in the pointing
game, and the class statistics count it separately (``zero_maps``) instead of
hiding it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from camlens.core.ops import upsample
from camlens.metrics.pointing import energy_share, object_mask

__all__ = ["ClassStats", "mass_inside", "object_mask"]


def mass_inside(maps: Tensor, mask: Tensor) -> Tensor:
    """Share of each map's mass on the object (:func:`~camlens.metrics.pointing.energy_share` after upsampling).

    Args:
        maps: non-negative maps ``(N, K, h, w)`` at any resolution.
        mask: object pixels ``(N, H, W)`` bool; maps are upsampled (bilinear) to ``(H, W)``.

    Returns:
        ``(N, K)`` float32 in [0, 1]; NaN for a map whose total is zero.
    """
    return energy_share(upsample(maps.float(), mask.shape[-2:]), mask)


class ClassStats:
    """Running per-class sums, fed shard by shard, in shard order (so the result is deterministic).

    Statistics are over each item's first target (the top-1 for ``top-k``):
    ``n``, ``mean_confidence`` (softmax probability of the explained class),
    ``accuracy`` (argmax == label), and per map key ``mean_mass_inside`` over
    the items whose map is finite and not all zero, with ``zero_maps`` counting
    the all-zero ones and ``nonfinite_maps`` those holding a NaN or an infinity
    (from the model: non-finite inputs are refused before they are explained).
    """

    def __init__(self, num_classes: int, map_keys: Iterable[str], class_names: list[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.map_keys = list(map_keys)
        c = num_classes
        self.n = torch.zeros(c, dtype=torch.float64)
        self.conf = torch.zeros(c, dtype=torch.float64)
        self.correct = torch.zeros(c, dtype=torch.float64)
        self.mass = {k: torch.zeros(c, dtype=torch.float64) for k in self.map_keys}
        self.mass_n = {k: torch.zeros(c, dtype=torch.float64) for k in self.map_keys}
        self.nonfinite = {k: torch.zeros(c, dtype=torch.float64) for k in self.map_keys}
        self.has_inside = False

    def update(self, shard: dict[str, Tensor]) -> None:
        """Add one shard's items (its ``labels``, ``preds``, ``probs`` and ``inside/...`` tensors)."""
        labels = shard["labels"].long()
        keep = (labels >= 0) & (labels < self.num_classes)
        lab = labels[keep]
        first = lambda t: (t[:, 0] if t.ndim == 2 else t)[keep]  # noqa: E731
        ones = torch.ones_like(lab, dtype=torch.float64)
        self.n.index_add_(0, lab, ones)
        self.conf.index_add_(0, lab, first(shard["probs"]).double())
        self.correct.index_add_(0, lab, (shard["preds"][keep] == lab).double())
        for key in self.map_keys:
            m = shard["maps/" + key]
            finite = torch.isfinite(m.reshape(m.shape[0], -1) if m.ndim == 3 else m[:, 0].reshape(m.shape[0], -1))
            finite = finite.all(dim=1)[keep]
            self.nonfinite[key].index_add_(0, lab[~finite], torch.ones_like(lab[~finite], dtype=torch.float64))
            name = "inside/" + key
            if name not in shard:
                continue
            self.has_inside = True
            v = first(shard[name]).double()
            ok = ~torch.isnan(v) & finite
            self.mass[key].index_add_(0, lab[ok], v[ok])
            self.mass_n[key].index_add_(0, lab[ok], torch.ones_like(v[ok]))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: one entry per class with items, plus ``"all"``."""

        def mean(s: Tensor, n: Tensor) -> float | None:
            return float(s / n) if n > 0 else None

        def row(idx: slice | int) -> dict[str, Any]:
            n = self.n[idx].sum()
            out: dict[str, Any] = {
                "n": int(n),
                "mean_confidence": mean(self.conf[idx].sum(), n),
                "accuracy": mean(self.correct[idx].sum(), n),
            }
            for key in self.map_keys:
                mn, nf = self.mass_n[key][idx].sum(), self.nonfinite[key][idx].sum()
                out[key] = {
                    "mean_mass_inside": mean(self.mass[key][idx].sum(), mn),
                    "zero_maps": int(n - mn - nf) if self.has_inside else None,
                    "nonfinite_maps": int(nf),
                }
            return out

        classes = {}
        for c in range(self.num_classes):
            if self.n[c] > 0:
                name = self.class_names[c] if self.class_names and c < len(self.class_names) else str(c)
                classes[str(c)] = {"name": name, **row(c)}
        return {"classes": classes, "all": row(slice(None))}
