"""All perturbation metrics of many maps at once, on one :class:`~camlens.metrics._runner.ProbeRunner`.

:func:`faithfulness` plans exactly what :func:`~camlens.metrics.deletion`,
:func:`~camlens.metrics.insertion`, :func:`~camlens.metrics.road` and
:func:`~camlens.metrics.confidence_change` plan for one map (the same plan
functions: the same perturbed images, tie-breaking and ROAD noise), for every
map at once:

- the forward passes shared by every map run once per image: the image itself
  (deletion step 0, insertion step S, the confidence on the full image), the
  deletion baseline (step S) and the insertion baseline (step 0);
- the class is predicted once, not once per metric;
- the ROAD masks of every map of a chunk of images go into one imputation solve;
- all perturbed images of all maps of a chunk go through the model in large
  batches under ``torch.inference_mode``;
- on the CPU they go through a copy of the model: where it is eligible, the
  inference-optimized copy Score-CAM uses (:mod:`camlens.methods._rerun`:
  BatchNorm folded, pre-packed oneDNN convolutions, checked against the
  model's own output on the first images; the tutorial ConvNet's passes ran
  1.15x faster), otherwise a channels-last copy. The class explained is the
  model's own prediction.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camlens.core.targets import OutputSpec, select_output
from camlens.errors import InputError
from camlens.methods._rerun import InferenceCopy
from camlens.metrics._common import check_images_maps, resolve_classes, saliency_rank
from camlens.metrics._runner import DEFAULT_BUDGET, ProbeRunner
from camlens.metrics.confidence import plan_confidence
from camlens.metrics.perturbation import Baseline, _pixel_counts, make_baseline, plan_curves
from camlens.metrics.road import ROAD_PERCENTAGES, check_percentages, plan_road

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
    chunk_images: int | None = None,
    channels_last: bool | None = None,
    optimize: bool | None = None,
    budget: int = DEFAULT_BUDGET,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, dict[str, MapScores]]:
    """Deletion, insertion, ROAD and confidence curves of several maps of the same images, batched.

    The formulas are those of :func:`camlens.metrics.deletion` (Petsiuk 2018),
    :func:`~camlens.metrics.insertion`, :func:`~camlens.metrics.road` (Rong
    2022) and :func:`~camlens.metrics.confidence_change` (Chattopadhay 2018);
    the explained class is the model's prediction. The perturbed images are
    built by the same plans as theirs (:func:`~camlens.metrics.perturbation.plan_curves`,
    :func:`~camlens.metrics.road.plan_road`, :func:`~camlens.metrics.confidence.plan_confidence`),
    so each map's curves equal those functions' (same ``seed``) up to the
    model's own rounding in batches of another size, in channels-last, or in
    the optimized copy (see the module's docstring).

    Args:
        model: the classifier (unchanged; with ``channels_last`` a deep copy is converted).
        x: ``(N, C, H, W)`` images.
        maps: name -> ``(N, H, W)`` saliency in [0, 1].
        seed: tie-breaking order and ROAD noise, as in the single metrics.
        steps, deletion_baseline, insertion_baseline: as in :func:`~camlens.metrics.deletion`.
        percentages, noise: as in :func:`~camlens.metrics.road`.
        batch_size: images per forward pass.
        chunk_images: at most this many images' perturbations are built at once (default: as many as
            ``budget`` holds).
        budget: bytes of perturbed images, imputation work and forward batches held at once (about):
            see :class:`~camlens.metrics._runner.ProbeRunner`.
        progress: called with the number of images finished, after each chunk.
        channels_last: ``True``/``False`` run a channels-last copy of the model / the model itself;
            ``None`` (default) decides as above.
        optimize: with ``channels_last=None`` on the CPU: ``None`` uses the optimized copy where it is eligible
            and reproduces the model, ``True`` requires it (:class:`InputError` saying why not), ``False`` never.

    Returns:
        ``(classes, scores)``: ``(N,)`` predicted classes and name -> :class:`MapScores`.

    Raises:
        InputError: maps of the wrong shape, NaN or outside [0, 1]; bad ``steps`` or percentages.
    """
    if not maps:
        raise InputError("maps={} gives nothing to score; pass at least one name -> (N, H, W) map")
    for mp in maps.values():
        check_images_maps(x, mp, unit=True)
    qs = check_percentages(percentages)
    if chunk_images is not None and (not isinstance(chunk_images, int) or chunk_images < 1):
        raise InputError(f"chunk_images={chunk_images!r} must be a positive int, e.g. 32, or None")
    _pixel_counts(x.shape[2] * x.shape[3], steps, x.device)  # checks steps before any forward pass
    classes = resolve_classes(model, x, None, output, batch_size)
    net, cl = _probe_module(model, x, output, channels_last, optimize)

    names = list(maps)
    stacked = torch.stack([maps[e] for e in names])  # (G, N, H, W)
    ranks = saliency_rank(stacked, seed)
    runner = ProbeRunner(net, x, classes, output=output, batch_size=batch_size, chunk_images=chunk_images,
                         channels_last=cl, budget=budget, sizing_model=model)  # fmt: skip
    dele = plan_curves(runner, x, make_baseline(x, deletion_baseline), ranks, steps)
    ins = plan_curves(runner, make_baseline(x, insertion_baseline), x, ranks, steps)
    rd = plan_road(runner, x, ranks, qs, noise, seed)
    conf = plan_confidence(runner, x, stacked)
    runner.run(progress)
    (d, i), (morf, lerf), (full, masked) = (dele(), ins()), rd(), conf()
    return classes, {e: MapScores(d[j], i[j], morf[j], lerf[j], full, masked[j]) for j, e in enumerate(names)}


def _probe_module(
    model: nn.Module, x: Tensor, output: OutputSpec, channels_last: bool | None, optimize: bool | None
) -> tuple[nn.Module, bool]:
    """The module the perturbed images go through, and whether it takes channels-last batches."""
    if channels_last is None and x.device.type == "cpu" and optimize is not False:
        probe = x[:8]
        with torch.no_grad():
            logits = select_output(model(probe), output)
        net = InferenceCopy(optimize).module(model, probe, logits, output)
        if net is not model:
            return net, False
    cl = x.device.type == "cpu" if channels_last is None else channels_last
    return (copy.deepcopy(model).to(memory_format=torch.channels_last) if cl else model), cl
