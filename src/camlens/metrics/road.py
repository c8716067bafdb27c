"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, ICML 2022, arXiv:2202.00449)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camlens.core.targets import OutputSpec, TargetSpec
from camlens.errors import CamlensError, InputError
from camlens.metrics._common import check_images_maps, resolve_classes, saliency_rank
from camlens.metrics._multigrid import SMALL, build_hierarchy, jacobi_cg, neighbour_sum, pcg_solve
from camlens.metrics._runner import ProbeRunner

__all__ = [
    "ROAD_PERCENTAGES",
    "ImputationError",
    "RoadResult",
    "check_percentages",
    "noisy_linear_impute",
    "plan_road",
    "road",
    "road_counts",
    "road_images",
    "road_noise",
]

#: the removal fractions of the paper's curves: 10 %, 20 %, ..., 90 %.
ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class ImputationError(CamlensError, RuntimeError):
    """The imputation system did not converge (it should not happen for a mask with a known pixel)."""


def noisy_linear_impute(
    x: Tensor,
    mask: Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float | None = None,
    max_iter: int = 100,
    budget: int = 256 * 2**20,
) -> Tensor:
    """Replace the masked pixels by the neighbour-weighted mean of their neighbours, plus noise.

    Rong et al. 2022, Sec. 4.2 ("noisy linear imputation"): every removed
    pixel ``i`` equals the weighted mean of its in-image 8-neighbours ``j``,
    weights ``w_ij = 1/6`` (direct) and ``1/12`` (diagonal), known pixels fixed:

        (sum_j w_ij) u_i - sum_{j removed} w_ij u_j = sum_{j known} w_ij x_j,   i removed

    then ``u_i += noise * eps_i`` with ``eps_i ~ N(0, 1)``. The system is
    sparse, symmetric and positive definite when at least one pixel is known;
    it is solved per image and channel by conjugate gradients preconditioned
    with one multigrid V-cycle (:mod:`camlens.metrics._multigrid`: about ten
    iterations whatever the image size, so the time grows linearly with the
    pixels; up to 48x48 pixels by Jacobi preconditioning, faster there)
    in ``x``'s float dtype (float32 for half/bfloat16), many masks at
    once, until the residual ``||A u - b|| <= tol * ||b||``.
    Default ``tol``: 1e-8 in float64, 1e-6 in float32 (pixel errors below
    1e-5, a thousandth of the paper's noise of 0.01).

    Args:
        x: ``(N, C, H, W)`` images.
        mask: ``(N, H, W)`` bool, True where the pixel is removed (all channels).
        noise: standard deviation of the Gaussian noise added to imputed pixels.
        generator: for the noise (CPU generator; the noise is moved to ``x``'s device).
        tol, max_iter: convergence of the solver (``tol`` per dtype as above; at most ``max_iter`` iterations).
        budget: bytes of solver memory; masks are solved in chunks that fit (at least one mask at a time).

    Returns:
        ``(N, C, H, W)`` images, known pixels unchanged, in ``x``'s dtype.

    Raises:
        InputError: shapes that do not match, or an image with every pixel removed.
        ImputationError: a system still above ``tol`` after ``max_iter`` iterations.
    """
    if x.ndim != 4 or mask.shape != (x.shape[0], *x.shape[2:]):
        raise InputError(f"mask must be (N, H, W) = {(x.shape[0], *x.shape[2:])} for x of shape {tuple(x.shape)}")
    mask = mask.to(torch.bool)
    full = mask.flatten(1).all(dim=1)
    if bool(full.any()):
        raise InputError(
            f"mask removes every pixel of image {int(full.nonzero()[0])}; the imputation needs a known pixel "
            "(use removal fractions below 1)"
        )
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64; half/bfloat16 solve in float32
    if tol is None:
        tol = 1e-8 if dtype == torch.float64 else 1e-6
    xs = x.to(dtype)
    m = mask.to(dtype).unsqueeze(1)  # (n, 1, h, w), 1 = removed
    u = _solve_imputation(xs, m[:, 0], tol, max_iter, budget)
    if noise:
        eps = torch.randn(u.shape, generator=generator, dtype=torch.float64).to(device=x.device, dtype=dtype)
        u = u + noise * eps * m
    out = torch.where(m.bool(), u, xs)
    return out.to(x.dtype)


def _impute_chunk(xs: Tensor, m: Tensor, tol: float, limit: int) -> Tensor:
    """The solution ``(B, C, H, W)`` of the systems of masks ``m`` ``(B, H, W)`` (1 = removed), 0 off the mask."""
    b, c, h, w = xs.shape
    if max(h, w) <= SMALL:  # Jacobi-PCG: few, cheap iterations on small images
        u, worst = jacobi_cg(xs.reshape(b * c, h, w), m.repeat_interleave(c, dim=0), tol, max(limit, 4 * h * w))
        u = u.view(b, c, h, w)
    else:
        hier = build_hierarchy(m)
        u, worst, _ = pcg_solve(hier, hier.mask * neighbour_sum((1 - hier.mask) * xs), tol, limit)
        if worst > tol:  # a safety net: the previous solver, slow at this size but never wrong
            u, worst = jacobi_cg(xs.reshape(b * c, h, w), m.repeat_interleave(c, dim=0), tol, 4 * h * w)
            u = u.view(b, c, h, w)
    if worst > tol:
        raise ImputationError(
            f"noisy linear imputation did not converge in {limit} iterations (residual {worst:.3g} > tol {tol:.3g})"
        )
    return u


def _solve_imputation(xs: Tensor, m: Tensor, tol: float, limit: int, budget: int) -> Tensor:
    """Solve the imputation systems of images ``xs`` ``(N, C, H, W)``, masks ``m`` ``(N, H, W)``, in chunks.

    Multigrid-preconditioned conjugate gradients (:mod:`camlens.metrics._multigrid`),
    as many masks at once as fit in ``budget`` bytes (about 24 values per pixel and channel).
    """
    n, c, h, w = xs.shape
    per_mask = 24 * (c + 3) * h * w * xs.element_size()
    step = max(1, budget // per_mask)
    parts = [_impute_chunk(xs[i : i + step], m[i : i + step], tol, limit) for i in range(0, n, step)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def check_percentages(percentages: Sequence[float]) -> list[float]:
    """The removal fractions as floats; :class:`InputError` unless each lies strictly between 0 and 1."""
    qs = [float(q) for q in percentages]
    if not qs or any(not 0.0 < q < 1.0 for q in qs):
        raise InputError(f"percentages={list(percentages)!r} must be fractions strictly between 0 and 1, e.g. 0.1..0.9")
    return qs


def road_counts(percentages: Sequence[float], hw: int, device: torch.device | str = "cpu") -> Tensor:
    """``(P,)`` int64: how many pixels each fraction removes, ``round(q * H*W)``."""
    return torch.tensor([round(float(q) * hw) for q in percentages], device=device)


def road_noise(
    n: int,
    k: int,
    c: int,
    h: int,
    w: int,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(N, 2P, C, H, W)`` standard normal imputation noise of ROAD, one draw per image and mask.

    Drawn in float64 on the CPU from ``Generator().manual_seed(seed + 1)`` in one call, so image ``i``
    gets the same noise whatever the chunking (and on any device); MoRF masks first, then LeRF.
    """
    gen = torch.Generator().manual_seed(int(seed) + 1)
    return torch.randn(n, 2 * k, c, h, w, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def road_images(
    x: Tensor, rank: Tensor, counts: Tensor, noise: float, eps: Tensor, budget: int = 256 * 2**20
) -> Tensor:
    """The imputed images of ROAD's curves: ``(N*2P, C, H, W)``, per image MoRF at each count, then LeRF.

    Args:
        x: ``(N, C, H, W)`` images.
        rank: ``(N, H, W)`` or ``(N, H*W)`` saliency rank, 0 = most salient (:func:`saliency_rank`).
        counts: ``(P,)`` removed pixels per fraction (:func:`road_counts`).
        noise: standard deviation of the noise added to imputed pixels.
        eps: ``(N, 2P, C, H, W)`` standard normal noise (:func:`road_noise`).
        budget: bytes of imputation work at once (:func:`noisy_linear_impute`).
    """
    n, c, h, w = x.shape
    hw, k = h * w, counts.numel()
    r = rank.reshape(n, 1, h, w)
    most = r < counts.view(1, k, 1, 1)
    least = r >= (hw - counts).view(1, k, 1, 1)
    masks = torch.cat([most, least], dim=1).reshape(n * 2 * k, h, w)
    imgs = x.unsqueeze(1).expand(n, 2 * k, c, h, w).reshape(n * 2 * k, c, h, w)
    filled = noisy_linear_impute(imgs, masks, noise=0.0, budget=budget)
    if noise:
        filled = filled + (noise * eps.reshape(filled.shape)).to(filled.dtype) * masks.unsqueeze(1).to(filled.dtype)
    return filled


def plan_road(
    runner: ProbeRunner, x: Tensor, ranks: Tensor, percentages: Sequence[float], noise: float, seed: int
) -> Callable[[], tuple[Tensor, Tensor]]:
    """Plan the ROAD curves of ``G`` maps on ``runner``: every map's masks of a chunk in one imputation solve.

    Args:
        runner: collects the images.
        x: ``(N, C, H, W)`` images.
        ranks: ``(G, N, H*W)`` or ``(G, N, H, W)`` saliency ranks, 0 = most salient (:func:`saliency_rank`).
        percentages: the removal fractions (checked by :func:`check_percentages`).
        noise: standard deviation of the imputation noise; ``seed`` draws it (:func:`road_noise`),
            the same for every map of an image.

    Returns:
        A function to call after ``runner.run()``: ``(morf, lerf)``, each ``(G, N, P)`` class probabilities.
    """
    n, c, h, w = x.shape
    g, k = ranks.shape[0], len(percentages)
    counts = road_counts(percentages, h * w, x.device)
    eps = road_noise(n, k, c, h, w, seed, x.device, x.dtype)
    flat = ranks.reshape(g, n, h * w)

    def build(rows: slice) -> Tensor:
        return road_images(
            x[rows].repeat(g, 1, 1, 1), flat[:, rows].flatten(0, 1), counts, noise, eps[rows].repeat(g, 1, 1, 1, 1),
            runner.budget // 2,
        )

    probe = runner.add(build, g, 2 * k)
    return lambda: (runner[probe][..., :k], runner[probe][..., k:])


@dataclass
class RoadResult:
    """ROAD curves of one map per image.

    Attributes:
        percentages: ``(P,)`` removed fractions.
        morf: ``(N, P)`` class probability with the most relevant pixels removed first.
        lerf: ``(N, P)`` the same with the least relevant removed first.
        classes: ``(N,)`` explained classes.
    """

    percentages: Tensor
    morf: Tensor
    lerf: Tensor
    classes: Tensor

    @property
    def morf_score(self) -> Tensor:
        """``(N,)`` mean MoRF probability over the percentages (lower is better)."""
        return self.morf.mean(dim=1)

    @property
    def lerf_score(self) -> Tensor:
        """``(N,)`` mean LeRF probability over the percentages (higher is better)."""
        return self.lerf.mean(dim=1)

    @property
    def score(self) -> Tensor:
        """``(N,)`` LeRF minus MoRF, averaged over the percentages (higher is better)."""
        return (self.lerf - self.morf).mean(dim=1)


def road(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: TargetSpec = None,
    *,
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    output: OutputSpec = None,
    batch_size: int = 512,
) -> RoadResult:
    """ROAD: remove pixels by saliency, fill them by noisy linear imputation, follow the class probability.

    Rong et al. 2022: for each fraction ``q`` in 10..90 %, remove the
    ``round(q HW)`` most (MoRF) or least (LeRF) relevant pixels, impute them
    with :func:`noisy_linear_impute` (which hides the shape of the removed
    region from the model), and record ``p = softmax(f(x_imputed))_c``.

        MoRF(q) = p(x with top-q removed)       lower is better
        LeRF(q) = p(x with bottom-q removed)    higher is better
        ROAD    = mean_q [LeRF(q) - MoRF(q)]    higher is better (the summary camlens reports)

    The paper plots accuracy; camlens records the softmax probability of the
    explained class per image (the same curve, per image, without thresholding).

    Args:
        model: the classifier (run under ``torch.no_grad``; state unchanged).
        x: ``(N, C, H, W)`` images.
        maps: ``(N, H, W)`` saliency; ties broken by a seeded order (see
            :func:`camlens.metrics.saliency_rank`).
        target: ``None`` (predicted class), an int or N ints.
        percentages: removal fractions, each in (0, 1).
        noise: standard deviation of the imputation noise (the paper: 0.01 on [0, 1] pixels).
        seed: seeds the tie-breaking order and the noise.

    Returns:
        A :class:`RoadResult`.
    """
    check_images_maps(x, maps)
    qs = check_percentages(percentages)
    classes = resolve_classes(model, x, target, output, batch_size)
    runner = ProbeRunner(model, x, classes, output=output, batch_size=batch_size)
    curves = plan_road(runner, x, saliency_rank(maps[None], seed), qs, noise, seed)
    runner.run()
    morf, lerf = curves()
    return RoadResult(torch.tensor(qs, dtype=torch.float32, device=x.device), morf[0], lerf[0], classes)
