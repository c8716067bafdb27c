"""Randomization tests beyond cascading MPRT: smooth and efficient MPRT, and the random-logit test.

Each takes the model, images ``x`` ``(N, C, H, W)``, a method name and its layer, calls the
method's explainer (signed maps, ``relu=False, normalize=False`` where the method has the
switches, as :func:`camlens.metrics.sanity_check`) and returns per-image values. Randomized
models are deep copies made by :func:`camlens.metrics.randomized_models`; the user's model is
never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize
from camlens.core.targets import TargetSpec, select_output
from camlens.errors import InputError
from camlens.metrics._common import resolve_classes
from camlens.metrics._explain import (
    Explain,
    check_count,
    check_images,
    check_scale,
    fully_randomized,
    layer_name,
    method_maps,
    noise_draws,
    noisy_maps,
)
from camlens.metrics.sanity import layers_from_top, randomized_models, spearman, ssim

__all__ = [
    "EfficientMPRTResult",
    "RandomLogitResult",
    "SmoothMPRTResult",
    "discrete_entropy",
    "efficient_mprt",
    "flat_ssim",
    "random_logit",
    "smooth_mprt",
]

ORDERS = ("bottom_up", "top_down")
SIMILARITIES = ("ssim", "flat_ssim")


def _layer_order(model: nn.Module, x: Tensor, layers: list[str] | None) -> list[str]:
    """The layers to re-initialize, top (output) first: ``layers`` or :func:`layers_from_top`."""
    if layers is None:
        return layers_from_top(model, x[:1])
    if isinstance(layers, str) or not list(layers):
        raise InputError(f"layers={layers!r} must be a non-empty list of layer names, top (output) first")
    return list(layers)


def discrete_entropy(maps: Tensor, n_bins: int = 100) -> Tensor:
    """Shannon entropy (nats) of the histogram of each map's values in ``n_bins`` equal bins.

    With ``n_bins`` equal-width bins spanning ``[min a, max a]`` of one map (``[a - 0.5, a + 0.5]``
    for a constant map) and ``p_k`` the share of its pixels in bin ``k``:

        H(a) = - sum_k p_k log p_k

    The bins are numpy's ``np.histogram(a, bins=n_bins)`` (the last bin closed, values on an edge
    assigned as numpy does), so ``H`` equals ``scipy.stats.entropy(np.histogram(a, n_bins)[0])``,
    Quantus' ``discrete_entropy``. Computed in float64, batched.

    Args:
        maps: ``(N, ...)`` one map per image.
        n_bins: number of bins.

    Returns:
        ``(N,)`` float64.

    Example:
        >>> import torch
        >>> from camlens.metrics import discrete_entropy
        >>> discrete_entropy(torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]]), n_bins=4)
        tensor([1.3863, 0.0000], dtype=torch.float64)
    """
    n_bins = check_count("n_bins", n_bins)
    if not isinstance(maps, Tensor) or maps.ndim < 2:
        raise InputError(f"maps must be a (N, ...) tensor, one map per image, got {getattr(maps, 'shape', maps)!r}")
    a = maps.flatten(1).double()
    lo, hi = a.amin(dim=1, keepdim=True), a.amax(dim=1, keepdim=True)
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    k = torch.arange(n_bins + 1, dtype=a.dtype, device=a.device)
    edges = k * ((hi - lo) / n_bins) + lo  # np.linspace(lo, hi, n_bins + 1) ...
    edges[:, -1:] = hi  # ... with its exact end point
    idx = ((a - lo) * (n_bins / (hi - lo))).long()
    idx = torch.where(idx == n_bins, idx - 1, idx)
    idx = torch.where(a < edges.gather(1, idx), idx - 1, idx)  # numpy's corrections at the bin edges
    idx = torch.where((a >= edges.gather(1, idx + 1)) & (idx != n_bins - 1), idx + 1, idx)
    counts = torch.zeros(a.shape[0], n_bins, dtype=a.dtype, device=a.device).scatter_add_(1, idx, torch.ones_like(a))
    p = counts / a.shape[1]
    return 0.0 - torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)  # 0.0 - 0.0 is +0.0


@dataclass
class EfficientMPRTResult:
    """Explanation complexity before and after randomizing every layer of the model.

    Attributes:
        entropy: ``(N,)`` :func:`discrete_entropy` of the original model's maps.
        entropy_random: ``(N,)`` the same for the fully randomized model.
        rise: ``(N,)`` ``(entropy_random - entropy) / entropy``; higher passes the test.
        layers: the layers re-initialized.
    """

    entropy: Tensor
    entropy_random: Tensor
    rise: Tensor
    layers: list[str]


def efficient_mprt(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    target: TargetSpec = None,
    *,
    n_bins: int = 100,
    layers: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> EfficientMPRTResult:
    """Efficient MPRT: how much more complex does a method's map get when the model is fully randomized?

    Hedström, Weber, Lapuschkin, Höhne (2023, "Sanity checks revisited: an exploration to repair
    the model parameter randomisation test", arXiv:2401.06465), eMPRT: instead of comparing maps
    layer by layer with a similarity measure, compare the complexity of the map ``e`` of the
    original model ``f`` with that of the map ``e_rand`` of ``f`` with every layer re-initialized:

        eMPRT = (H(e_rand) - H(e)) / H(e),   H = entropy of the map's ``n_bins``-bin histogram

    A map that depends on the model should become noisier (more complex) when the weights are
    destroyed, so higher is better. Equals Quantus 0.6.0's ``EfficientMPRT`` (defaults, with
    ``n_bins=100`` and the same randomized model): Quantus resets each layer under
    ``torch.manual_seed(seed + 1)`` (the same seed for every layer, set in the global RNG); camlens
    re-initializes with :func:`camlens.metrics.randomized_models` (``seed + i`` for the ``i``-th
    layer, in a forked RNG). A constant original map has ``H(e) = 0``: its rise is ``inf`` (or NaN
    if the randomized map is constant too).

    Args:
        model: the classifier.
        x: ``(N, C, H, W)`` images.
        method: a name in :data:`camlens.METHODS`.
        layer: the layer the method explains.
        target: the explained class (default: the original model's prediction), used for both models.
        n_bins: histogram bins of :func:`discrete_entropy` (the paper's 100).
        layers: the layers to re-initialize, top (output) first; default every layer with parameters
            (:func:`layers_from_top`).
        seed: seeds the re-initialization.
        batch_size: images per explainer call (the values do not depend on it); each call keeps the
            model's activations of that many images for the backward pass: lower it for large inputs.

    Returns:
        An :class:`EfficientMPRTResult`.

    Example:
        >>> import torch
        >>> from camlens.metrics import efficient_mprt
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> efficient_mprt(net, torch.rand(2, 3, 8, 8), "gradcam", "0").rise.shape
        torch.Size([2])
    """
    check_images(x)
    n_bins, batch_size = check_count("n_bins", n_bins), check_count("batch_size", batch_size)
    layer = layer_name(model, layer)
    classes = resolve_classes(model, x, target, batch_size=batch_size)
    order = _layer_order(model, x, layers)
    before = discrete_entropy(method_maps(method, model, layer, batch_size)(x, classes), n_bins)
    rand = fully_randomized(model, order, seed)
    after = discrete_entropy(method_maps(method, rand, layer, batch_size)(x, classes), n_bins)
    return EfficientMPRTResult(before, after, (after - before) / before, order)


@dataclass
class SmoothMPRTResult:
    """Similarity of denoised maps of the original and the randomized models, per randomization step.

    Attributes:
        order: ``"bottom_up"`` or ``"top_down"``.
        layers: the layer re-initialized at each step; step ``i`` has ``layers[:i+1]`` re-initialized
            (cascading), so the last step is the fully randomized model.
        similarity: ``(L, N)`` Spearman rank correlation per step and image.
    """

    order: str
    layers: list[str]
    similarity: Tensor

    @property
    def last(self) -> Tensor:
        """``(N,)`` the similarity after re-initializing every layer (lower passes the test)."""
        return self.similarity[-1]


def _smoothed(
    explain: Explain, x: Tensor, classes: Tensor, sigma: Tensor, seed: int, samples: int, clean: bool, bs: int
) -> Tensor:
    """``e_bar``: the mean map over ``samples`` inputs ``x + sigma z_s`` (the last one clean if ``clean``), float64."""
    noisy = samples - 1 if clean else samples
    draw = noise_draws(x, seed, "normal", noisy)

    def perturb(s: int) -> Tensor:
        return x if s >= noisy else x + draw(s) * sigma

    maps = noisy_maps(explain, x, classes, perturb, samples, bs)
    total = next(maps).double()
    for m in maps:
        total = total + m
    return total / samples


def _smooth_checks(x: Tensor, samples: int, noise: float, order: str, clean: bool, batch_size: int) -> Tensor:
    """Check :func:`smooth_mprt`'s arguments; return ``sigma`` ``(N, 1, 1, 1)``."""
    check_images(x)
    check_count("samples", samples)
    check_count("batch_size", batch_size)
    if order not in ORDERS:
        raise InputError(f"order={order!r} must be one of {', '.join(ORDERS)}")
    if clean and samples < 2:
        raise InputError(f"samples={samples} with include_clean=True leaves no noisy input; pass samples >= 2")
    return check_scale("noise", noise) * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)


def smooth_mprt(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    target: TargetSpec = None,
    *,
    samples: int = 50,
    noise: float = 0.1,
    order: str = "bottom_up",
    layers: list[str] | None = None,
    layerwise: bool = True,
    absolute: bool = True,
    include_clean: bool = False,
    seed: int = 0,
    batch_size: int = 64,
) -> SmoothMPRTResult:
    """Smooth MPRT: model parameter randomization with maps denoised by averaging over noisy inputs.

    Hedström, Weber, Lapuschkin, Höhne (2023, "Sanity checks revisited: an exploration to repair
    the model parameter randomisation test", arXiv:2401.06465), sMPRT: the MPRT of Adebayo et
    al. (2018) with each map replaced by its mean over ``N = samples`` noisy copies of the input,
    so that the explanation's own noise does not pass for sensitivity to the model:

        e_bar(f, x) = 1/N sum_i e(f, x + d_i),   d_i ~ Normal(0, sigma^2),  sigma = noise (max x - min x)
        sMPRT_l = Spearman(|e_bar(f, x)|, |e_bar(f_l, x)|)

    where ``f_l`` has the layers up to ``l`` re-initialized, cascading in ``order``
    (``"bottom_up"``, from the input, is the paper's recommendation; ``"top_down"`` is Adebayo's),
    and ``sigma`` is per image (the SmoothGrad convention). Lower similarity passes the test.

    The same noise serves every model (only the weights differ). Quantus 0.6.0's ``SmoothMPRT``
    makes the last of the ``N`` inputs noise-free (``include_clean=True``), draws fresh noise for
    every model and reseeds every layer with ``seed + 1``; given the same noise and models, the
    values equal its (``abs=True``; its normalisation does not change ranks).

    Args:
        model, x, method, layer, target: as :func:`efficient_mprt`.
        samples, noise: ``N`` (the paper's 50) and ``sigma`` as a share of each image's value range (0.1).
        order: ``"bottom_up"`` or ``"top_down"``.
        layers: the layers to re-initialize, top (output) first (``order`` decides which comes first);
            default every layer with parameters (:func:`layers_from_top`).
        layerwise: ``False`` scores only the fully randomized model (``L = 1``).
        absolute: correlate ``|e_bar|`` (default) or the signed maps (``False``).
        include_clean: make the last of the ``N`` inputs the clean image (Quantus' variant).
        seed: seeds the noise and the re-initialization.
        batch_size: images per explainer call (the values do not depend on it); each call keeps the
            model's activations of that many images for the backward pass: lower it for large inputs.

    Returns:
        A :class:`SmoothMPRTResult`.

    Example:
        >>> import torch
        >>> from camlens.metrics import smooth_mprt
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> res = smooth_mprt(net, torch.rand(2, 3, 8, 8), "gradcam", "0", samples=4)
        >>> res.layers, tuple(res.similarity.shape)
        (['0', '4'], (2, 2))
    """
    sigma = _smooth_checks(x, samples, noise, order, include_clean, batch_size)
    layer = layer_name(model, layer)
    classes = resolve_classes(model, x, target, batch_size=batch_size)
    steps = _layer_order(model, x, layers)
    steps = steps[::-1] if order == "bottom_up" else steps

    def denoised(f: nn.Module) -> Tensor:
        explain = method_maps(method, f, layer, batch_size)
        maps = _smoothed(explain, x, classes, sigma, seed, samples, include_clean, batch_size)
        return maps.abs() if absolute else maps

    original = denoised(model)
    # cascading copies change in place from step to step: each is scored before the next is made
    pairs = randomized_models(model, steps, "cascading", seed) if layerwise else None
    names, rows = [], []
    for name, rand in pairs or [(steps[-1], fully_randomized(model, steps, seed))]:
        names.append(name)
        rows.append(spearman(original, denoised(rand)))
    return SmoothMPRTResult(order, names, torch.stack(rows))


def flat_ssim(a: Tensor, b: Tensor, *, window: int = 7) -> Tensor:
    """Quantus 0.6.0's SSIM: the 1-D SSIM of each pair of flattened maps, each divided by its max ``|value|``.

    ``a / max|a|`` and ``b / max|b|`` are flattened to ``P`` values (a zero map is left as is);
    local means and sample (co)variances (``W / (W - 1)`` correction) over a uniform window of
    ``W = window`` consecutive values; ``L`` the range of both maps together:

        SSIM = mean over windows of (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``: ``skimage.metrics.structural_similarity`` on the
    flattened arrays, as Quantus' ``RandomLogit`` calls it. Quantus divides by the max over the
    whole batch, not per map; the two agree for a batch of one.

    Returns:
        ``(N,)`` float64.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise InputError(f"flat_ssim needs two (N, ...) maps of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    window = check_count("window", window, 2)
    if a[0].numel() < window:
        raise InputError(f"flat_ssim needs maps of at least window={window} values, got {a[0].numel()}")

    def unit(t: Tensor) -> Tensor:
        t = t.flatten(1).double()
        top = t.abs().amax(dim=1, keepdim=True)
        return torch.where(top > 0, t / top.clamp_min(torch.finfo(t.dtype).tiny), t)

    a64, b64 = unit(a), unit(b)
    both = torch.cat([a64, b64], dim=1)
    span = (both.amax(dim=1) - both.amin(dim=1)).view(-1, 1)
    kernel = torch.full((1, 1, window), 1.0 / window, dtype=torch.float64, device=a64.device)

    def filt(z: Tensor) -> Tensor:
        return F.conv1d(z.unsqueeze(1), kernel).squeeze(1)

    mu_a, mu_b = filt(a64), filt(b64)
    cov = window / (window - 1)
    saa, sbb = cov * (filt(a64 * a64) - mu_a**2), cov * (filt(b64 * b64) - mu_b**2)
    sab = cov * (filt(a64 * b64) - mu_a * mu_b)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean(dim=1)


@dataclass
class RandomLogitResult:
    """The random-logit test per image.

    Attributes:
        classes: ``(N,)`` the explained class (the prediction, or ``target``).
        others: ``(N,)`` the randomly drawn other class.
        similarity: ``(N,)`` similarity of the two maps (lower passes the test).
    """

    classes: Tensor
    others: Tensor
    similarity: Tensor


def random_logit(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    target: TargetSpec = None,
    *,
    similarity: str = "ssim",
    seed: int = 0,
    batch_size: int = 64,
) -> RandomLogitResult:
    """Random-logit test: is the map of the explained class different from the map of another class?

    Sixt, Granz, Landgraf (ICML 2020, "When explanations lie: why many modified BP attributions
    fail"), Sec. 5: a map that explains the model's decision should change when another logit is
    explained; compare the map ``e_y`` of class ``y`` with the map ``e_c`` of a class ``c`` drawn
    uniformly from the ``K - 1`` other classes:

        RL = SSIM(norm(e_y), norm(e_c)),   c ~ Uniform({0 .. K-1} without y)

    With ``similarity="ssim"`` (the paper's 2-D SSIM) the maps are min-max normalized to [0, 1]
    and compared with :func:`camlens.metrics.ssim`; ``"flat_ssim"`` is Quantus 0.6.0's
    ``RandomLogit`` (:func:`flat_ssim`: 1-D SSIM of the flattened maps, each divided by its max
    ``|value|``; Quantus divides by the batch's max). The other class is ``r + (r >= y)`` with
    ``r`` drawn by ``torch.randint(0, K - 1, (N,))`` from ``torch.Generator().manual_seed(seed)``,
    as Quantus picks the ``r``-th of the other classes (it draws ``r`` with numpy's global RNG,
    reseeded for every batch). Lower similarity passes the test.

    Args:
        model, x, method, layer: as :func:`efficient_mprt`.
        target: the explained class; default the model's prediction.
        similarity: ``"ssim"`` or ``"flat_ssim"``.
        seed: seeds the draw of the other classes.
        batch_size: images per explainer call (the values do not depend on it); each call keeps the
            model's activations of that many images for the backward pass: lower it for large inputs.

    Returns:
        A :class:`RandomLogitResult`.

    Example:
        >>> import torch
        >>> from camlens.metrics import random_logit
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> res = random_logit(net, torch.rand(2, 3, 8, 8), "gradcam", "0", target=[0, 2])
        >>> bool((res.others != res.classes).all()), tuple(res.similarity.shape)
        (True, (2,))
    """
    check_images(x)
    batch_size = check_count("batch_size", batch_size)
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity={similarity!r} must be one of {', '.join(SIMILARITIES)}")
    with torch.no_grad():
        k = select_output(model(x[:1])).shape[1]
    if k < 2:
        raise InputError(f"the random-logit test needs a model with at least 2 classes, {type(model).__name__} has {k}")
    classes = resolve_classes(model, x, target, batch_size=batch_size)
    r = torch.randint(0, k - 1, (x.shape[0],), generator=torch.Generator().manual_seed(int(seed))).to(classes.device)
    others = r + (r >= classes).long()
    explain = method_maps(method, model, layer, batch_size)
    e_y, e_c = explain(x, classes), explain(x, others)
    if similarity == "ssim":
        sim = ssim(minmax_normalize(e_y, start_dim=1), minmax_normalize(e_c, start_dim=1))
    else:
        sim = flat_ssim(e_y, e_c)
    return RandomLogitResult(classes, others, sim)
