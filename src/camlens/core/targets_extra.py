"""Ready-made targets beyond classification: segmentation, detection, embeddings.

Each target is a callable on the selected model output returning one score
per image, ``(N,)``; pass it as ``target=`` to any CAM method. Scores are
taken before any softmax/sigmoid, as for classes.

Example:
    >>> import torch, camlens
    >>> seg = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1))   # (N, 3, H, W) logits
    >>> mask = torch.zeros(8, 8, dtype=torch.bool); mask[2:5, 2:5] = True
    >>> camlens.GradCAM(seg, layers="0")(torch.rand(2, 1, 8, 8), target=SegmentationTarget(1, mask)).map.shape
    torch.Size([2, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from camlens.errors import TargetError

__all__ = ["DetectionTarget", "EmbeddingTarget", "SegmentationTarget", "box_iou", "detection_output"]


class SegmentationTarget:
    """The class-``c`` logit summed over a mask: ``s_n = sum_ij M_nij * y_n[c, i, j]``.

    Args:
        class_index: the class whose per-pixel logits are summed.
        mask: ``(H, W)`` for every image or ``(N, H, W)`` per image, bool or
            float weights, at the output's resolution; ``None`` sums every pixel.

    The model output must be ``(N, classes, H, W)`` (pick it with ``output=``
    for models returning a dict, e.g. ``output="out"``).
    """

    def __init__(self, class_index: int, mask: Tensor | None = None) -> None:
        if not isinstance(class_index, int) or isinstance(class_index, bool) or class_index < 0:
            raise TargetError(f"SegmentationTarget class_index={class_index!r} must be a non-negative int")
        if mask is not None and (not isinstance(mask, Tensor) or mask.ndim not in (2, 3)):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise TargetError(f"SegmentationTarget mask must be an (H, W) or (N, H, W) tensor, got {got}")
        self.class_index = class_index
        self.mask = mask

    def __call__(self, logits: Tensor) -> Tensor:
        if logits.ndim != 4:
            raise TargetError(
                f"SegmentationTarget needs (N, classes, H, W) scores, got shape {tuple(logits.shape)}; "
                "pass output= to pick the segmentation logits"
            )
        if self.class_index >= logits.shape[1]:
            raise TargetError(
                f"SegmentationTarget class_index={self.class_index} is out of range for {logits.shape[1]} classes"
            )
        plane = logits[:, self.class_index]
        if self.mask is None:
            return plane.flatten(1).sum(dim=1)
        mask = self.mask.to(device=plane.device, dtype=plane.dtype)
        if mask.shape[-2:] != plane.shape[-2:] or (mask.ndim == 3 and mask.shape[0] != plane.shape[0]):
            raise TargetError(
                f"SegmentationTarget mask has shape {tuple(self.mask.shape)} but the scores are "
                f"{tuple(plane.shape)} (N, H, W); give a mask at the output's resolution"
            )
        return (plane * mask).flatten(1).sum(dim=1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes ``a`` ``(..., A, 4)`` and ``b`` ``(..., B, 4)`` -> ``(..., A, B)``.

    Boxes are ``(x1, y1, x2, y2)``.
    """
    a = a.unsqueeze(-2)
    b = b.unsqueeze(-3)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(dim=-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def detection_output(
    boxes: str = "boxes", scores: str = "logits", labels: str | None = None, num_classes: int | None = None
) -> Any:
    """An ``output=`` callable packing a detector's boxes and class scores into one ``(N, M, 4 + K)`` tensor.

    Args:
        boxes: the key (or attribute) of the ``(N, M, 4)`` boxes, (x1, y1, x2, y2).
        scores: the key of the ``(N, M, K)`` class scores (or ``(N, M)`` for one class).
        labels: the key of the ``(M,)`` class labels of detectors that return
            one score per box with its label (torchvision: ``boxes``,
            ``labels``, ``scores``); each box's score is put in its label's
            column of K = ``num_classes`` columns, the others 0.
        num_classes: K, needed with ``labels`` (torchvision's COCO detectors: 91).

    Handles a dict (or object) of batched tensors, and a list of per-image
    dicts with differing M (torchvision style), padded with empty boxes of score 0.

    Example (a torchvision detector):
        ``output=detection_output(boxes="boxes", scores="scores", labels="labels", num_classes=91)``
    """
    if labels is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise TargetError(f"detection_output(labels={labels!r}) needs num_classes=K, the number of classes; "
                          f"got num_classes={num_classes!r}")

    def get(o: Any, key: str) -> Tensor:
        v = o[key] if isinstance(o, Mapping) else getattr(o, key, None)
        if not isinstance(v, Tensor):
            raise TargetError(f"detection output has no tensor {key!r}; pass detection_output(boxes=..., scores=...)")
        return v

    def pack_one(o: Any) -> Tensor:
        b, s = get(o, boxes), get(o, scores)
        if labels is not None:
            lab = get(o, labels).long()
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= int(num_classes or 0)):
                raise TargetError(f"detection labels reach {int(lab.max())}, beyond num_classes={num_classes}")
            s = torch.nn.functional.one_hot(lab, int(num_classes or 0)).to(s.dtype) * s.unsqueeze(-1)
        s = s.unsqueeze(-1) if s.ndim == b.ndim - 1 else s
        return torch.cat([b.to(s.dtype), s], dim=-1)

    def pack(output: Any) -> Tensor:
        if isinstance(output, (list, tuple)):
            per = [pack_one(o) for o in output]
            m = max(p.shape[0] for p in per)
            return torch.stack([torch.nn.functional.pad(p, (0, 0, 0, m - p.shape[0])) for p in per])
        return pack_one(output)

    return pack


class DetectionTarget:
    """Scores of the predicted boxes that match given boxes by IoU.

    For each given box ``g`` (with label ``l_g``), the best-overlapping predicted
    box ``p*`` (highest IoU; among all predictions) counts if
    ``IoU(p*, g) >= iou_threshold``; the image's score is

        s_n = sum_g [IoU(p*_g, g) >= t] * y_n[p*_g, l_g]

    with ``y`` the pre-sigmoid/softmax class scores of the predictions (the
    given label's column; the best column when ``labels`` is None). Works on
    the ``(N, M, 4 + K)`` tensor made by :func:`detection_output`.

    Args:
        boxes: ``(G, 4)`` for every image, or ``(N, G, 4)``, (x1, y1, x2, y2),
            in the coordinates the model predicts in.
        labels: ``(G,)`` or ``(N, G)`` class indices, or ``None``.
        iou_threshold: the least IoU for a match.
        same_label: only predicted boxes with a non-zero score for the given
            box's label can match (detectors that label each box, packed by
            ``detection_output(labels=...)``: a box of another class has 0 there).

    A given box with no match adds 0 (its map is then all zeros).
    """

    def __init__(self, boxes: Tensor | Sequence[Sequence[float]], labels: Tensor | Sequence[int] | None = None,
                 iou_threshold: float = 0.5, same_label: bool = False) -> None:
        b = torch.as_tensor(boxes, dtype=torch.float32) if not isinstance(boxes, Tensor) else boxes
        if b.ndim not in (2, 3) or b.shape[-1] != 4:
            raise TargetError(f"DetectionTarget boxes must be (G, 4) or (N, G, 4), got shape {tuple(b.shape)}")
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise TargetError(f"DetectionTarget iou_threshold={iou_threshold!r} must be in [0, 1]")
        lab = None if labels is None else torch.as_tensor(labels).long()
        if lab is not None and tuple(lab.shape) != tuple(b.shape[:-1]):
            raise TargetError(
                f"DetectionTarget labels have shape {tuple(lab.shape)}, expected {tuple(b.shape[:-1])} (one per box)"
            )
        if same_label and lab is None:
            raise TargetError("DetectionTarget(same_label=True) needs labels, one per given box")
        self.boxes, self.labels, self.iou_threshold, self.same_label = b, lab, float(iou_threshold), same_label

    def __call__(self, packed: Tensor) -> Tensor:
        if packed.ndim != 3 or packed.shape[-1] < 5:
            raise TargetError(
                f"DetectionTarget needs (N, M, 4 + K) predictions, got shape {tuple(packed.shape)}; "
                "build the model with output=camlens.detection_output(boxes=..., scores=...)"
            )
        n = packed.shape[0]
        pred_boxes, cls = packed[..., :4], packed[..., 4:]
        given = self.boxes.to(device=packed.device, dtype=packed.dtype)
        given = given.expand(n, *given.shape[-2:]) if given.ndim == 2 else given
        if given.shape[0] != n:
            raise TargetError(f"DetectionTarget has boxes for {given.shape[0]} images but the batch has {n}")
        iou = box_iou(pred_boxes.detach(), given)  # (N, M, G)
        lab = None
        if self.labels is not None:
            lab = self.labels.to(packed.device)
            lab = lab.expand(n, -1) if lab.ndim == 1 else lab
            if int(lab.max()) >= cls.shape[-1] or int(lab.min()) < 0:
                raise TargetError(f"DetectionTarget labels must be in 0..{cls.shape[-1] - 1}")
            if self.same_label:  # a predicted box of another class cannot match: its IoU counts as -1
                own = cls.detach().gather(2, lab.unsqueeze(1).expand(n, cls.shape[1], lab.shape[1])) != 0
                iou = torch.where(own, iou, torch.full_like(iou, -1.0))
        best_iou, best = iou.max(dim=1)  # (N, G)
        matched = best_iou >= self.iou_threshold
        idx = best.unsqueeze(-1).expand(n, best.shape[1], cls.shape[-1])
        cls_best = cls.gather(1, idx)  # (N, G, K)
        picked = cls_best.amax(dim=-1) if lab is None else cls_best.gather(2, lab.unsqueeze(-1)).squeeze(-1)
        return (picked * matched.to(picked.dtype)).sum(dim=1)


class EmbeddingTarget:
    """Cosine similarity of the model's embedding to a concept vector: ``s_n = <e_n, v> / (|e_n| |v|)``.

    Args:
        concept: ``(D,)`` for every image or ``(N, D)``.

    The model output must be ``(N, D)`` embeddings (pick them with ``output=``).
    """

    def __init__(self, concept: Tensor) -> None:
        if not isinstance(concept, Tensor) or concept.ndim not in (1, 2) or not concept.is_floating_point():
            got = tuple(concept.shape) if isinstance(concept, Tensor) else type(concept).__name__
            raise TargetError(f"EmbeddingTarget concept must be a float (D,) or (N, D) tensor, got {got}")
        if float(concept.norm()) == 0:
            raise TargetError("EmbeddingTarget concept is all zeros; cosine similarity is undefined")
        self.concept = concept

    def __call__(self, emb: Tensor) -> Tensor:
        if emb.ndim != 2 or emb.shape[-1] != self.concept.shape[-1]:
            raise TargetError(
                f"EmbeddingTarget needs (N, {self.concept.shape[-1]}) embeddings, got shape {tuple(emb.shape)}"
            )
        v = self.concept.to(device=emb.device, dtype=emb.dtype)
        return torch.nn.functional.cosine_similarity(emb, v.expand_as(emb), dim=1)
