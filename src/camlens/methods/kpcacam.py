"""KPCA-CAM (Karmani et al., arXiv:2410.00267, 2024): Eigen-CAM with kernel PCA."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.errors import InputError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["KERNELS", "KPCACAM", "SIGNS", "kernel_first_component"]

#: the kernels KPCA-CAM takes (scikit-learn's names and formulas).
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")

#: sign rules for the first component; the first is the default.
SIGNS = ("feature-sum", "max-abs")


def _kernel(f: Tensor, kernel: str, gamma: float, coef0: float, degree: int) -> Tensor:
    """The ``(..., P, P)`` kernel matrix of the rows of ``f`` ``(..., P, C)``."""
    if kernel == "rbf":
        return torch.exp(-gamma * torch.cdist(f, f).square())
    if kernel == "cosine":
        u = f / f.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)
        return u @ u.transpose(-1, -2)
    dot = f @ f.transpose(-1, -2)
    if kernel == "sigmoid":
        return torch.tanh(gamma * dot + coef0)
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    return dot


def kernel_first_component(
    features: Tensor,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    coef0: float = 1.0,
    degree: int = 3,
    sign: str = "feature-sum",
) -> Tensor:
    """Each image's positions projected on the first kernel principal component.

    Args:
        features: ``(N, C, *s)``; the rows are the P positions, the columns the C channels.
        kernel, gamma, coef0, degree: scikit-learn's kernels (``gamma=None``: ``1 / C``).
        sign: ``"feature-sum"``: the projection correlates non-negatively with the
            channel sum of the features (:func:`camlens.methods.eigencam.first_component`'s
            rule); ``"max-abs"``: the entry of largest magnitude of the eigenvector
            is positive (scikit-learn's ``svd_flip``, so pytorch-grad-cam's).

    Returns:
        ``(N, *s)``: ``sqrt(lambda_1) v_1``, with ``(lambda_1, v_1)`` the top eigenpair of the
        doubly centred kernel matrix of the channel-centred features (what
        ``KernelPCA(n_components=1).fit_transform`` returns).
    """
    m = features.flatten(2).transpose(1, 2)  # (N, P, C)
    total = m.sum(dim=-1)  # (N, P)
    f = m - m.mean(dim=1, keepdim=True)  # centre each channel over positions
    g = 1.0 / f.shape[-1] if gamma is None else gamma
    k = _kernel(f, kernel, g, coef0, degree)
    k = k - k.mean(dim=-1, keepdim=True) - k.mean(dim=-2, keepdim=True) + k.mean(dim=(-1, -2), keepdim=True)
    vals, vecs = torch.linalg.eigh(k)  # ascending
    v = vecs[..., -1]  # (N, P)
    if sign == "max-abs":
        pick = v.gather(-1, v.abs().argmax(dim=-1, keepdim=True))
        flip = pick < 0
    else:
        flip = (v * total).sum(dim=-1, keepdim=True) < 0
    v = torch.where(flip, -v, v)
    proj = v * vals[..., -1:].clamp_min(0).sqrt()
    return proj.unflatten(-1, features.shape[2:])


@register("kpcacam")
class KPCACAM(BaseCAM):
    """KPCA-CAM: the layer's positions projected on their first kernel principal component.

    For activations ``A`` ``(C, *s)`` of one image, with ``F`` the ``(P, C)``
    matrix of positions (rows) by channels, each channel centred over
    positions, and ``K_ij = k(F_i, F_j)`` the kernel matrix, doubly centred
    (``K - 1K/P - K1/P + 1K1/P^2``):

        (lambda_1, v_1) = the top eigenpair of K
        L = sqrt(lambda_1) v_1                    (reshaped to s)

    Kernels as in scikit-learn: ``sigmoid`` ``tanh(gamma <x, y> + coef0)``
    (default, as in the paper's and pytorch-grad-cam's code), ``rbf``
    ``exp(-gamma |x - y|^2)``, ``poly`` ``(gamma <x, y> + coef0)^degree``,
    ``linear``, ``cosine``; ``gamma=None`` is ``1 / C``. With
    ``kernel="linear"`` this is Eigen-CAM with centring.

    Sign: an eigenvector's sign is arbitrary. The default
    (``sign="feature-sum"``) is Eigen-CAM's rule in camlens: the map
    correlates non-negatively with the channel sum of the activations, so it
    is bright where the features are strong. pytorch-grad-cam's ``KPCA_CAM``
    gets scikit-learn's rule, the largest-magnitude entry of ``v_1`` positive,
    which is unrelated to the image and can give the inverted map;
    ``sign="max-abs"`` reproduces it. Otherwise the two agree.

    Computed in float64 (the doubly centred kernel is a small difference of
    near-equal entries). Class-agnostic: no gradients and no target; every
    target of an image gets the same map. Cost: one forward pass and an eigendecomposition of a
    ``(P, P)`` matrix per image (P = positions of the layer).

    Args:
        kernel: one of :data:`KERNELS`.
        gamma, coef0, degree: the kernel's parameters.
        sign: ``"feature-sum"`` or ``"max-abs"``.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, kernel ``(N, P, P)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        coef0: float = 1.0,
        degree: int = 3,
        sign: str = "feature-sum",
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if kernel not in KERNELS:
            raise InputError(f"kernel={kernel!r} is not one of {list(KERNELS)}")
        if sign not in SIGNS:
            raise InputError(f"sign={sign!r} is not one of {list(SIGNS)}")
        if gamma is not None and not (isinstance(gamma, (int, float)) and gamma > 0):
            raise InputError(f"gamma={gamma!r} must be a positive number or None (1 / channels)")
        self.kernel = kernel
        self.gamma = gamma
        self.coef0 = float(coef0)
        self.degree = int(degree)
        self.sign = sign

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        k = ctx.scores.shape[1]
        out = {}
        for name, a in ctx.activations.items():
            # In float64: the centred kernel is a small difference of near-equal entries (tanh(gamma x.y + 1)
            # for features near zero), which float32 rounds to noise.
            m = kernel_first_component(a.double(), self.kernel, self.gamma, self.coef0, self.degree, self.sign)
            out[name] = m.unsqueeze(1).expand(-1, k, *m.shape[1:]).to(a.dtype)
        return out
