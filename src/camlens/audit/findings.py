"""The audit's judgements, each with its evidence: a class decided from a place away from the object,
a cluster that differs from the rest of its class, items whose map disagrees with their class.

A class is **flagged** when one region (a group of hot cells of the class's mean map,
:func:`camlens.audit.spread.hot_regions`, widened by a cell: :class:`~camlens.audit.spread.Region`)
holds at least :data:`MIN_MASS` of the mean map's mass, at least :data:`MIN_LIFT` times the
share of the object's pixels it holds (the *lift*: about 1 when the maps follow the object),
its hot cells at least :data:`MIN_CONCENTRATION` times the share of the image they cover
(the *concentration*: a mark of a few pixels gathers the mass in a small place; a cue spread
over the background around the object does not), and at least half that mass sits there in
at least :data:`MIN_CONSISTENCY` of the class's items. Measured on the tutorial ConvNet
(docs/audit.md): planted marks give lifts of 7.5 to 21 and concentrations of 13 to 28; on
classes without a mark, regions off the object (lift 4 or more) have concentrations of at
most 3.6. When several regions pass, the one with the most mass is reported, with the box of
the class's fixed pattern there when it has one (:mod:`camlens.audit.fixed`: a mark to the
pixel), else the region's. A region that passes every test but the concentration is reported
as a finding (``"broad_region"``), without flagging the class. The object is known from the
images (:func:`camlens.audit.collect.object_mask`); without them nothing is flagged, and the
class's ``why`` says so. Clusters and atypical items are reported as findings; they do
not flag a class (every class has some spread).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from camlens.audit.clusters import Clustering, features
from camlens.audit.collect import Collected, audit_class
from camlens.audit.spread import Region, hot_regions, region_evidence

__all__ = [
    "BROAD",
    "MIN_CONCENTRATION",
    "MIN_CONSISTENCY",
    "MIN_ITEMS",
    "MIN_LIFT",
    "MIN_MASS",
    "THRESHOLDS",
    "atypical",
    "cluster_findings",
    "judge_class",
    "overlap",
]  # fmt: skip

MIN_MASS = 0.2
MIN_LIFT = 4.0
MIN_CONSISTENCY = 0.5
MIN_CONCENTRATION = 5.0
#: the start of the ``why`` of a class not flagged whose region is off the object but broad (a finding).
BROAD = "not flagged, a broad region off the object"
#: a class with fewer items with a map is not judged.
MIN_ITEMS = 10
#: a cluster is a finding when it holds this share of its class or more and overlaps the rest by less than ...
CLUSTER_MIN_SHARE = 0.05
CLUSTER_MAX_OVERLAP = 0.6
#: an item is atypical when its overlap with its class's mean map is this many MADs under the median, and < 0.5.
ITEM_MADS = 3.0

THRESHOLDS = {"min_mass": MIN_MASS, "min_lift": MIN_LIFT, "min_concentration": MIN_CONCENTRATION,
              "min_consistency": MIN_CONSISTENCY, "min_items": MIN_ITEMS,
              "cluster_min_share": CLUSTER_MIN_SHARE, "cluster_max_overlap": CLUSTER_MAX_OVERLAP,
              "item_mads": ITEM_MADS}  # fmt: skip


def overlap(p: Tensor, q: Tensor) -> Tensor:
    """The mass two distributions share, ``sum(min(p, q))`` over the last dimension: 1 same, 0 disjoint."""
    return torch.minimum(p, q).sum(dim=-1)


def judge_class(c: Collected, rows: Tensor, mean: Tensor) -> tuple[bool, Region | None, str]:
    """``(flagged, the region of the evidence, why)`` for one class's items ``rows`` and its mean map."""
    n = int((~c.empty[rows]).sum())
    if n < MIN_ITEMS:
        return False, None, f"not judged: {n} item(s) with a non-empty map, fewer than {MIN_ITEMS}"
    regions = [region_evidence(c, rows, mean, cells) for cells in hot_regions(mean)]
    if not regions:
        return False, None, "not judged: the mean map is zero"
    if c.objects is None:
        r = regions[0]
        return False, r, (f"not judged: the images were not read (pass the data), so the object is unknown; the "
                          f"hottest region holds {r.mass:.0%} of the mean map's mass")  # fmt: skip
    strong = [r for r in regions if r.mass >= MIN_MASS and r.consistency >= MIN_CONSISTENCY]
    off = [r for r in strong if (r.lift or 0.0) >= MIN_LIFT]
    small = [r for r in off if r.concentration >= MIN_CONCENTRATION]
    # a flag reports the region with the most mass among those that pass; otherwise the one most off the object
    best = max(small, key=lambda r: r.mass) if small else max(off or strong or regions, key=lambda r: r.lift or 0.0)
    lift = best.lift or 0.0
    said = (
        f"{best.mass:.0%} of the mean map's mass lies in the region, which holds {best.object_share:.1%} of the "
        f"object's pixels (lift {lift:.1f}); its hottest cells hold {best.hot_mass:.0%} of the mass on "
        f"{best.hot_area:.1%} of the image (concentration {best.concentration:.1f}); {best.consistency:.0%} of the "
        "items put at least half the region's mass there"
    )
    if small:
        return True, best, f"decided away from the object: {said}{_snap(c, rows, best)}"
    if off:
        broad = f"concentration under {MIN_CONCENTRATION:g}: a wide place, such as the background around the object"
        return False, best, f"{BROAD} ({broad}); look at it: {said}"
    if not strong:
        return False, best, f"no region holds {MIN_MASS:.0%} of the mass consistently; the largest: {said}"
    return False, best, f"the maps follow the object (lift under {MIN_LIFT:g}): {said}"


def _snap(c: Collected, rows: Tensor, region: Region) -> str:
    """Report the class's fixed pattern at ``region`` as its box, when one is there; what to add to the ``why``."""
    if c.moments is None or c.input_size is None:
        return ""
    found = c.moments.pattern(int(audit_class(c.labels[rows[:1]], c.targets[rows[:1]])), region.map_box(c))
    if found is None:
        return ""
    region.pattern, region.pattern_pixels = found
    return (
        f"; the box is the class's fixed pattern there ({region.pattern_pixels} pixels the same on every image "
        f"of the class and unlike the other classes'), inside or across the map's box {region.map_box(c)}"
    )


def cluster_findings(c: Collected, rows: Tensor, clustering: Clustering) -> list[dict[str, Any]]:
    """Per cluster: size, share, accuracy, mean confidence, overlap of its prototype with the rest's, a finding."""
    keep = rows[~c.empty[rows]]
    x = features(c.maps[keep])
    out = []
    for j in range(clustering.k):
        member = clustering.labels == j
        ids = keep[member]
        proto = x[member].mean(dim=0)
        rest = x[~member].mean(dim=0) if bool((~member).any()) else proto
        ov = float(overlap(proto, rest))
        share = float(member.float().mean())
        labelled = c.labels[ids] >= 0
        acc = float((c.preds[ids] == c.labels[ids])[labelled].float().mean()) if bool(labelled.any()) else None
        out.append({
            "cluster": j, "size": int(member.sum()), "share": share, "accuracy": acc,
            "mean_confidence": float(c.probs[ids].mean()), "overlap_with_rest": ov,
            "differs": clustering.k > 1 and share >= CLUSTER_MIN_SHARE and ov < CLUSTER_MAX_OVERLAP,
            "members": [int(i) for i in c.ids[ids]],
        })  # fmt: skip
    return out


def atypical(c: Collected, rows: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """``(overlap of each item's map with its class's mean map (NaN if empty), atypical)``, ``(len(rows),)`` each."""
    x = features(c.maps[rows])
    m = features(mean[None])[0]
    ov = torch.where(c.empty[rows], torch.full((len(rows),), float("nan")), overlap(x, m[None]))
    ok = ov[~ov.isnan()]
    if len(ok) < MIN_ITEMS:
        return ov, torch.zeros(len(rows), dtype=torch.bool)
    med = ok.median()
    mad = (ok - med).abs().median().clamp(min=1e-6)
    return ov, (ov < med - ITEM_MADS * mad) & (ov < 0.5)
