"""Robustness of maps to small input noise: max-sensitivity (Yeh et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec
from camlens.metrics._common import resolve_classes
from camlens.metrics._explain import check_count, check_images, check_scale, method_maps, noise_draws, noisy_maps

__all__ = ["max_sensitivity"]


def max_sensitivity(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    target: TargetSpec = None,
    *,
    samples: int = 200,
    radius: float = 0.2,
    relative: bool = True,
    seed: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """Max-sensitivity: the largest change of a method's map under ``samples`` small random input perturbations.

    Yeh, Hsieh, Suggala, Inouye, Ravikumar (NeurIPS 2019, "On the (in)fidelity and sensitivity of
    explanations"), Def. 3.1, estimated by Monte Carlo: with ``d_1 .. d_S`` drawn uniformly from
    the L-inf ball of radius ``r`` (each value ``d ~ Uniform[-r, r]``) and ``e(x)`` the map of ``x``,

        SENS_max = max_s ||e(x + d_s) - e(x)||_2 / ||e(x)||_2     (relative=True)
        SENS_max = max_s ||e(x + d_s) - e(x)||_2                  (relative=False, Def. 3.1 as written)

    Norms are Frobenius norms of the ``(H, W)`` maps. Yeh et al. define the absolute change;
    raw maps of different methods differ in scale, so camlens divides by ``||e(x)||`` by default,
    as Quantus 0.6.0's ``MaxSensitivity`` does (``fro_norm`` over ``fro_norm``): given the same
    noise the values equal Quantus'. Quantus skips NaN ratios (``nanmax``); here a zero map
    ``e(x)`` with ``relative=True`` gives ``inf`` (or NaN), reported, never hidden. Lower is more
    robust. The noise is not clipped to the data range, as in the paper and Quantus; the
    explained class stays that of the clean image.

    The ``s``-th perturbation is ``r (2 u_s - 1)`` with ``u_s = torch.rand(x.shape)`` drawn in order
    from ``torch.Generator().manual_seed(seed)``: the same for any ``batch_size`` and device.

    Args:
        model: the classifier.
        x: ``(N, C, H, W)`` images.
        method: a name in :data:`camlens.METHODS`.
        layer: the layer the method explains.
        target: the explained class; default the model's prediction on ``x``.
        samples: ``S``, perturbations per image (Quantus' default 200).
        radius: ``r``, in the units of ``x`` (Quantus' default 0.2).
        relative: divide by ``||e(x)||`` (default) or not (the paper's definition).
        seed: seeds the perturbations.
        batch_size: images per explainer call (several perturbations share a call; the values do
            not depend on it); each call keeps the model's activations of that many images for the
            backward pass: lower it for large inputs.

    Returns:
        ``(N,)`` float64.

    Example:
        >>> import torch
        >>> from camlens.metrics import max_sensitivity
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> max_sensitivity(net, torch.rand(2, 3, 8, 8), "gradcam", "0", samples=10, radius=0.05).shape
        torch.Size([2])
    """
    check_images(x)
    samples, batch_size = check_count("samples", samples), check_count("batch_size", batch_size)
    r = check_scale("radius", radius, positive=True)
    classes = resolve_classes(model, x, target, batch_size=batch_size)
    explain = method_maps(method, model, layer, batch_size)
    e0 = explain(x, classes).flatten(1).double()
    draw = noise_draws(x, seed, "uniform", samples)

    def perturb(s: int) -> Tensor:
        return x + r * (2 * draw(s) - 1)

    worst = torch.full((x.shape[0],), -torch.inf, dtype=torch.float64, device=x.device)
    for m in noisy_maps(explain, x, classes, perturb, samples, batch_size):
        worst = torch.maximum(worst, (m.flatten(1).double() - e0).norm(dim=1))
    return worst / e0.norm(dim=1) if relative else worst
