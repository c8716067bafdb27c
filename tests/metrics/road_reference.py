"""The ROAD imputation as camlens solved it before the multigrid solver: the float64 reference of the tests.

Jacobi-preconditioned conjugate gradients on the 9-point stencil (the solver of
camlens up to issue 12, kept verbatim apart from its error types): its
iteration count grows with the image's diameter, which is why the library
moved on, but on small images it is a simple, independent check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _neighbour_sum(u: Tensor) -> Tensor:
    """sum_j w_ij u_j over the in-image 8-neighbours of every pixel of ``(B, H, W)``: 1/6 direct, 1/12 diagonal.

    The weights are ``([1, 2, 1] x [1, 2, 1] - 4 delta) / 12``: a separable
    pass over a zero-padded copy, far cheaper than a 1-channel ``conv2d`` on the CPU.
    """
    q = F.pad(u, (1, 1, 1, 1))
    rows = q[:, :, :-2] + q[:, :, 2:] + 2 * q[:, :, 1:-1]
    both = rows[:, :-2] + rows[:, 2:] + 2 * rows[:, 1:-1]
    return (both - 4 * u) / 12


def noisy_linear_impute(
    x: Tensor,
    mask: Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
) -> Tensor:
    """Replace the masked pixels by the neighbour-weighted mean of their neighbours, plus noise.

    Rong et al. 2022, Sec. 4.2 ("noisy linear imputation"): every removed
    pixel ``i`` equals the weighted mean of its in-image 8-neighbours ``j``,
    weights ``w_ij = 1/6`` (direct) and ``1/12`` (diagonal), known pixels fixed:

        (sum_j w_ij) u_i - sum_{j removed} w_ij u_j = sum_{j known} w_ij x_j,   i removed

    then ``u_i += noise * eps_i`` with ``eps_i ~ N(0, 1)``. The system is
    sparse, symmetric and positive definite when at least one pixel is known;
    it is solved per image and channel by Jacobi-preconditioned conjugate
    gradients in ``x``'s float dtype (float32 for half/bfloat16), batched as
    3x3 stencils, until the residual ``||A u - b|| <= tol * ||b||``.
    Default ``tol``: 1e-7 in float64, 1e-5 in float32 (pixel errors about 1e-4
    on 28x28 images, a hundredth of the paper's noise of 0.01).

    Args:
        x: ``(N, C, H, W)`` images.
        mask: ``(N, H, W)`` bool, True where the pixel is removed (all channels).
        noise: standard deviation of the Gaussian noise added to imputed pixels.
        generator: for the noise (CPU generator; the noise is moved to ``x``'s device).
        tol, max_iter: convergence of the solver (``tol`` per dtype as above; ``max_iter`` defaults to ``4 * H * W``).

    Returns:
        ``(N, C, H, W)`` images, known pixels unchanged, in ``x``'s dtype.

    Raises:
        InputError: shapes that do not match, or an image with every pixel removed.
    """
    if x.ndim != 4 or mask.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"mask must be (N, H, W) = {(x.shape[0], *x.shape[2:])} for x of shape {tuple(x.shape)}")
    mask = mask.to(torch.bool)
    full = mask.flatten(1).all(dim=1)
    if bool(full.any()):
        raise ValueError(
            f"mask removes every pixel of image {int(full.nonzero()[0])}; the imputation needs a known pixel "
            "(use removal fractions below 1)"
        )
    n, c, h, w = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64; half/bfloat16 solve in float32
    if tol is None:
        tol = 1e-7 if dtype == torch.float64 else 1e-5
    xs = x.to(dtype).reshape(n * c, h, w)
    m = mask.to(dtype).repeat_interleave(c, dim=0)  # (n*c, h, w), 1 = removed
    u = _solve_imputation(xs, m, tol, 4 * h * w if max_iter is None else max_iter)
    if noise:
        eps = torch.randn(u.shape, generator=generator, dtype=torch.float64).to(device=x.device, dtype=dtype)
        u = u + noise * eps * m
    out = torch.where(m.bool(), u, xs)
    return out.view(n, c, h, w).to(x.dtype)


def _solve_imputation(xs: Tensor, m: Tensor, tol: float, limit: int) -> Tensor:
    """Solve the imputation systems of ``(B, H, W)`` images ``xs`` with removed pixels ``m`` (1 = removed).

    Conjugate gradients with a Jacobi preconditioner, batched over the ``B``
    systems. Every vector is zero off the removed pixels, so
    ``A p = d p - m * nsum(p)`` with ``d`` the in-image weight sums. A system
    leaves the batch once ``||r|| <= tol * ||b||`` (checked every 4 iterations).

    Returns:
        ``(B, H, W)``: the solution on the removed pixels, 0 elsewhere.

    Raises:
        ImputationError: a system still above ``tol`` after ``limit`` iterations.
    """
    dtype, h, w = xs.dtype, xs.shape[1], xs.shape[2]
    d = _neighbour_sum(torch.ones(1, h, w, dtype=dtype, device=xs.device))  # in-image weight sums
    tiny = torch.finfo(dtype).tiny
    b = m * _neighbour_sum((1 - m) * xs)
    u = torch.zeros_like(b)
    bn = b.flatten(1).norm(dim=1).clamp_min(tiny)
    active = torch.arange(b.shape[0], device=b.device)
    r, mm, idg = b.clone(), m, m / d
    z = idg * r
    p = z.clone()
    rz = (r * z).sum(dim=(1, 2), keepdim=True)
    ua = torch.zeros_like(b)
    for it in range(limit + 1):
        if it % 4 == 0:
            done = r.flatten(1).norm(dim=1) <= tol * bn
            if bool(done.any()):
                u[active[done]] = ua[done]
                keep = ~done
                if not bool(keep.any()):
                    break
                active, r, mm, idg, bn, p, rz, ua = (t[keep] for t in (active, r, mm, idg, bn, p, rz, ua))
        if it == limit:
            worst = float((r.flatten(1).norm(dim=1) / bn).max())
            raise RuntimeError(
                f"noisy linear imputation did not converge in {limit} iterations (residual {worst:.3g})"
            )
        ap = d * p - mm * _neighbour_sum(p)
        pap = (p * ap).sum(dim=(1, 2), keepdim=True)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(tiny), torch.zeros_like(pap))
        ua = ua + alpha * p
        r = r - alpha * ap
        z = idg * r
        rz_new = (r * z).sum(dim=(1, 2), keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return u
