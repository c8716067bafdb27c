"""Deletion and insertion (Petsiuk, Das, Saenko, BMVC 2018, "RISE", arXiv:1806.07421)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.core.targets import OutputSpec, TargetSpec
from camlens.errors import InputError
from camlens.metrics._common import check_images_maps, resolve_classes, saliency_rank
from camlens.metrics._runner import ProbeRunner

__all__ = ["CurveResult", "blur", "deletion", "insertion", "make_baseline", "perturbation_curve", "plan_curves"]

Baseline: TypeAlias = str | float | Tensor


@dataclass
class CurveResult:
    """Probability curves of one perturbation metric.

    Attributes:
        fractions: ``(S+1,)`` fraction of pixels changed at each step, 0 to 1.
        curves: ``(N, S+1)`` softmax probability of the explained class.
        auc: ``(N,)`` area under each curve over ``fractions`` (trapezoid), in [0, 1].
        classes: ``(N,)`` the explained class of each image.
    """

    fractions: Tensor
    curves: Tensor
    auc: Tensor
    classes: Tensor


def blur(x: Tensor, sigma: float = 5.0, kernel_size: int = 11) -> Tensor:
    """Gaussian blur of ``(N, C, H, W)`` images, per channel, replicate padding.

    RISE blurs with a Gaussian of ``kernel_size`` 11 and ``sigma`` 5 to start insertion.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"blur kernel_size={kernel_size} must be an odd positive int, e.g. 11")
    if sigma <= 0:
        raise InputError(f"blur sigma={sigma} must be > 0, e.g. 5.0")
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    pad_mode = "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=pad_mode)
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=pad_mode)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(x: Tensor, baseline: Baseline, sigma: float = 5.0, kernel_size: int = 11) -> Tensor:
    """The image removed pixels take: ``"zero"``, ``"mean"`` (per image, channel), ``"blur"``, a number, a tensor.

    Returns:
        A tensor of ``x``'s shape.
    """
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError:
            raise InputError(
                f"baseline tensor of shape {tuple(baseline.shape)} does not broadcast to x's {tuple(x.shape)}"
            ) from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        return blur(x, sigma, kernel_size)
    raise InputError(
        f"baseline={baseline!r} is not one of 'zero', 'mean', 'blur', a number or a tensor shaped like x"
    )


def _pixel_counts(p: int, steps: int, device: torch.device) -> Tensor:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= p:
        raise InputError(f"steps={steps!r} must be an int from 1 to the number of pixels ({p})")
    k = torch.arange(steps + 1, device=device)
    return torch.div(k * p, steps, rounding_mode="floor")


def plan_curves(runner: ProbeRunner, start: Tensor, finish: Tensor, ranks: Tensor, steps: int) -> Callable[[], Tensor]:
    """Plan the perturbation curves of ``G`` maps on ``runner``: pixels move from ``start`` to ``finish``.

    At step ``k`` of ``S`` the ``floor(k * H*W / S)`` pixels of lowest rank
    (all channels) come from ``finish``, the others from ``start``. Step 0 is
    ``start`` and step ``S`` is ``finish`` for every map: they are scored once
    per image (:meth:`ProbeRunner.shared`), only the steps between per map.

    Args:
        runner: collects the images; its ``x`` gives ``N``.
        start, finish: ``(N, C, H, W)`` the images at step 0 and step S.
        ranks: ``(G, N, H*W)`` or ``(G, N, H, W)`` pixel ranks, 0 = moved first (:func:`saliency_rank`).
        steps: ``S``.

    Returns:
        A function to call after ``runner.run()``: ``(G, N, S+1)`` class probabilities.
    """
    g, n, h, w = ranks.shape[0], ranks.shape[1], start.shape[2], start.shape[3]
    inner = _pixel_counts(h * w, steps, start.device)[1:-1]
    ranks = ranks.reshape(g, n, 1, 1, h, w)
    first, last = runner.shared(start), runner.shared(finish)

    def build(rows: slice) -> Tensor:
        moved = ranks[:, rows] < inner.view(1, 1, -1, 1, 1, 1)  # (G, m, S-1, 1, H, W)
        return torch.where(moved, finish[None, rows, None], start[None, rows, None])

    mid = runner.add(build, g, inner.numel())
    return lambda: torch.cat([runner[first].expand(g, n, 1), runner[mid], runner[last].expand(g, n, 1)], dim=2)


def perturbation_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    start: Tensor,
    finish: Tensor,
    target: TargetSpec = None,
    *,
    steps: int = 16,
    seed: int = 0,
    output: OutputSpec = None,
    batch_size: int = 512,
) -> CurveResult:
    """Move pixels from ``start`` to ``finish`` most-salient first and follow the class probability.

    At step ``k`` of ``S`` the ``floor(k * H*W / S)`` most salient pixels
    (all channels) come from ``finish``, the others from ``start``. Ties in
    saliency are broken by :func:`camlens.metrics.saliency_rank` with ``seed``.
    One map per image; :func:`camlens.metrics.batched.faithfulness` scores many.

    Args:
        x: ``(N, C, H, W)`` images (used only to pick the predicted class when ``target`` is None).
        maps: ``(N, H, W)`` saliency, higher = more important.
        start, finish: ``(N, C, H, W)`` the images at step 0 and step S.

    Returns:
        A :class:`CurveResult`.
    """
    check_images_maps(x, maps)
    p = x.shape[2] * x.shape[3]
    counts = _pixel_counts(p, steps, x.device)
    classes = resolve_classes(model, x, target, output, batch_size)
    runner = ProbeRunner(model, x, classes, output=output, batch_size=batch_size)
    curves = plan_curves(runner, start, finish, saliency_rank(maps[None], seed), steps)
    runner.run()
    curve = curves()[0]
    fractions = counts.to(curve.dtype) / p
    return CurveResult(fractions, curve, torch.trapezoid(curve, fractions, dim=1), classes)


def deletion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: TargetSpec = None,
    *,
    steps: int = 16,
    baseline: Baseline = "zero",
    sigma: float = 5.0,
    kernel_size: int = 11,
    seed: int = 0,
    output: OutputSpec = None,
    batch_size: int = 512,
) -> CurveResult:
    """Deletion AUC: remove the most salient pixels first; a faithful map makes the probability fall fast.

    Petsiuk et al. 2018 (RISE), Sec. 4: with ``x_k`` the image whose
    ``floor(k HW / S)`` most salient pixels are replaced by the baseline,

        p_k = softmax(f(x_k))_c,      k = 0..S
        Deletion = integral_0^1 p(t) dt   (trapezoid over t_k = |removed_k| / HW)

    Lower is better. ``c`` is ``target`` or the class predicted for ``x``.

    Args:
        model: the classifier (run under ``torch.no_grad``; its state is not changed).
        x: ``(N, C, H, W)`` images on the model's device.
        maps: ``(N, H, W)`` saliency (any scale; only the order matters).
        target: ``None`` (predicted class), an int or N ints.
        steps: number of steps ``S`` (``S + 1`` forward passes per image).
        baseline: what removed pixels become: ``"zero"`` (the paper),
            ``"mean"``, ``"blur"``, a number or a tensor shaped like ``x``.
        sigma, kernel_size: the Gaussian of ``baseline="blur"``.
        seed: seed of the tie-breaking order among equally salient pixels.
        output, batch_size: where the logits are in the output; images per forward pass.

    Returns:
        A :class:`CurveResult`; ``auc`` is the per-image deletion score.

    Raises:
        InputError: shapes that do not match, NaN maps, a bad ``steps`` or ``baseline``.
    """
    check_images_maps(x, maps)
    base = make_baseline(x, baseline, sigma, kernel_size)
    return perturbation_curve(
        model, x, maps, x, base, target, steps=steps, seed=seed, output=output, batch_size=batch_size
    )


def insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: TargetSpec = None,
    *,
    steps: int = 16,
    baseline: Baseline = "blur",
    sigma: float = 5.0,
    kernel_size: int = 11,
    seed: int = 0,
    output: OutputSpec = None,
    batch_size: int = 512,
) -> CurveResult:
    """Insertion AUC: start from a blurred image and put back the most salient pixels first.

    Petsiuk et al. 2018 (RISE), Sec. 4: with ``x_k`` the baseline image
    (Gaussian blur, kernel 11, sigma 5 in the paper) whose ``floor(k HW / S)``
    most salient pixels are restored from ``x``,

        p_k = softmax(f(x_k))_c,      k = 0..S
        Insertion = integral_0^1 p(t) dt   (trapezoid over t_k)

    Higher is better. Arguments as in :func:`deletion`, with ``baseline`` the starting image.
    """
    check_images_maps(x, maps)
    base = make_baseline(x, baseline, sigma, kernel_size)
    return perturbation_curve(
        model, x, maps, base, x, target, steps=steps, seed=seed, output=output, batch_size=batch_size
    )
