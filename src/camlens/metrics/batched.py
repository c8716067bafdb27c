"""All perturbation metrics of many maps at once: shared forward passes, one imputation solve per chunk.

:func:`faithfulness` computes exactly what :func:`~camlens.metrics.deletion`,
:func:`~camlens.metrics.insertion`, :func:`~camlens.metrics.road` and
:func:`~camlens.metrics.confidence_change` compute for each map (the same
perturbed images, the same tie-breaking, the same ROAD noise), but

- the forward passes shared by every map run once per image: the image itself
  (deletion step 0, insertion step S, the confidence on the full image), the
  deletion baseline (step S) and the insertion baseline (step 0);
- the class is predicted once, not once per metric;
- the ROAD masks of every map of a chunk of images go into one imputation solve;
- all perturbed images of all maps of a chunk go through the model in large
  batches under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.errors import InputError
from camlens.core.targets import OutputSpec, select_output
from camlens.metrics._common import check_images_maps, saliency_rank
from camlens.metrics.perturbation import Baseline, _pixel_counts, make_baseline
from camlens.metrics.road import ROAD_PERCENTAGES, road_counts, road_images, road_noise

__all__ = ["MapScores", "faithfulness"]


@dataclass
class MapScores:
    """The per-image curves of one map.

    Attributes:
        deletion, insertion: ``(N, S+1)`` class probability per step (as :class:`CurveResult.curves`).
        morf, lerf: ``(N, P)`` ROAD curves (as :class:`RoadResult`).
        full, masked: ``(N,)`` probability on ``x`` and on ``x * map`` (as :class:`ConfidenceResult`).
    """

    deletion: Tensor
    insertion: Tensor
    morf: Tensor
    lerf: Tensor
    full: Tensor
    masked: Tensor


def _probs(model: nn.Module, x: Tensor, classes: Tensor, output: OutputSpec, batch_size: int, cl: bool) -> Tensor:
    out = []
    with torch.inference_mode():
        for xc, cc in zip(x.split(batch_size), classes.split(batch_size)):
            if cl:
                xc = xc.contiguous(memory_format=torch.channels_last)
            logits = select_output(model(xc), output)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            out.append(F.softmax(logits, dim=1).gather(1, cc[:, None])[:, 0])
    return torch.cat(out).to(x.dtype)


def faithfulness(
    model: nn.Module,
    x: Tensor,
    maps: Mapping[str, Tensor],
    *,
    seed: int = 0,
    steps: int = 16,
    deletion_baseline: Baseline = "zero",
    insertion_baseline: Baseline = "blur",
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = 0.01,
    output: OutputSpec = None,
    batch_size: int = 512,
    chunk_images: int = 32,
    channels_last: bool | None = None,
) -> tuple[Tensor, dict[str, MapScores]]:
    """Deletion, insertion, ROAD and confidence curves of several maps of the same images, batched.

    The formulas are those of :func:`camlens.metrics.deletion` (Petsiuk 2018),
    :func:`~camlens.metrics.insertion`, :func:`~camlens.metrics.road` (Rong
    2022) and :func:`~camlens.metrics.confidence_change` (Chattopadhay 2018);
    the explained class is the model's prediction. Each map's curves equal
    those functions' (same ``seed``) up to floating-point summation order.

    Args:
        model: the classifier (unchanged; with ``channels_last`` a deep copy is converted).
        x: ``(N, C, H, W)`` images.
        maps: name -> ``(N, H, W)`` saliency in [0, 1].
        seed: tie-breaking order and ROAD noise, as in the single metrics.
        steps, deletion_baseline, insertion_baseline: as in :func:`~camlens.metrics.deletion`.
        percentages, noise: as in :func:`~camlens.metrics.road`.
        batch_size: images per forward pass.
        chunk_images: images whose perturbations of every map are built at once
            (memory: about ``chunk_images * len(maps) * (2 * steps + 2 * P) * C*H*W`` values).
        channels_last: run a channels-last copy of the model (default: on the CPU only, where it is faster).

    Returns:
        ``(classes, scores)``: ``(N,)`` predicted classes and name -> :class:`MapScores`.

    Raises:
        InputError: maps of the wrong shape, NaN or outside [0, 1]; bad ``steps`` or percentages.
    """
    if not maps:
        raise InputError("maps={} gives nothing to score; pass at least one name -> (N, H, W) map")
    for mp in maps.values():
        check_images_maps(x, mp, unit=True)
    qs = [float(q) for q in percentages]
    if not qs or any(not 0.0 < q < 1.0 for q in qs):
        raise InputError(f"percentages={list(percentages)!r} must be fractions strictly between 0 and 1, e.g. 0.1..0.9")
    if not isinstance(chunk_images, int) or chunk_images < 1:
        raise InputError(f"chunk_images={chunk_images!r} must be a positive int, e.g. 32")
    n, c, h, w = x.shape
    hw = h * w
    counts = _pixel_counts(hw, steps, x.device)
    inner = counts[1:-1]  # steps 1..S-1; 0 and S are the shared start and finish images
    rc = road_counts(qs, hw, x.device)
    k = len(qs)
    cl = x.device.type == "cpu" if channels_last is None else channels_last
    net = copy.deepcopy(model).to(memory_format=torch.channels_last) if cl else model

    with torch.inference_mode():
        logits = torch.cat([select_output(net(xc), output) for xc in x.split(batch_size)])
    classes = logits.argmax(dim=1)
    del_base = make_baseline(x, deletion_baseline)
    ins_base = make_baseline(x, insertion_baseline)
    full = _probs(net, x, classes, output, batch_size, cl)
    p_del_end = _probs(net, del_base, classes, output, batch_size, cl)
    p_ins_start = _probs(net, ins_base, classes, output, batch_size, cl)

    names = list(maps)
    ranks = {e: saliency_rank(maps[e], seed).view(n, 1, h, w) for e in names}
    eps = road_noise(n, k, c, h, w, seed, x.device, x.dtype)
    s1 = inner.numel()
    parts: dict[str, list[Tensor]] = {e: [] for e in names}
    for i in range(0, n, chunk_images):
        sl = slice(i, i + chunk_images)
        m = x[sl].shape[0]
        xs = x[sl].unsqueeze(1)
        batch = []
        for e in names:
            moved = ranks[e][sl].unsqueeze(1) < inner.view(1, -1, 1, 1, 1)  # (m, S-1, 1, H, W)
            batch.append(torch.where(moved, del_base[sl].unsqueeze(1), xs).reshape(m * s1, c, h, w))
            batch.append(torch.where(moved, xs, ins_base[sl].unsqueeze(1)).reshape(m * s1, c, h, w))
            batch.append((x[sl] * maps[e][sl].unsqueeze(1).to(x.dtype)))
        # every map's ROAD masks in one solve
        road_x = torch.cat([x[sl]] * len(names))
        road_r = torch.cat([ranks[e][sl] for e in names])
        road_eps = torch.cat([eps[sl]] * len(names))
        batch.append(road_images(road_x, road_r, rc, noise, road_eps))
        cls = torch.cat(
            [torch.cat([classes[sl].repeat_interleave(s1)] * 2 + [classes[sl]]) for _ in names]
            + [classes[sl].repeat_interleave(2 * k).repeat(len(names))]
        )
        probs = _probs(net, torch.cat(batch), cls, output, batch_size, cl)
        head, road_p = probs[: len(names) * (2 * s1 + 1) * m], probs[len(names) * (2 * s1 + 1) * m :]
        head = head.view(len(names), -1)
        road_p = road_p.view(len(names), m, 2, k)
        for j, e in enumerate(names):
            parts[e].append(
                torch.cat([head[j, : m * s1].view(m, s1), head[j, m * s1 : 2 * m * s1].view(m, s1),
                           head[j, 2 * m * s1 :].view(m, 1), road_p[j].reshape(m, 2 * k)], dim=1)
            )
    out = {}
    for e in names:
        t = torch.cat(parts[e])
        dele = torch.cat([full[:, None], t[:, :s1], p_del_end[:, None]], dim=1)
        ins = torch.cat([p_ins_start[:, None], t[:, s1 : 2 * s1], full[:, None]], dim=1)
        masked = t[:, 2 * s1]
        road_t = t[:, 2 * s1 + 1 :].view(n, 2, k)
        out[e] = MapScores(dele, ins, road_t[:, 0], road_t[:, 1], full, masked)
    return classes, out
