"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299) and EigenGrad-CAM."""

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

__all__ = ["EigenCAM", "EigenGradCAM", "first_component"]


def first_component(features: Tensor, spatial_dims: int, center: bool = False) -> Tensor:
    """Projection of each set of feature maps on its first principal direction, with a fixed sign.

    Args:
        features: ``(..., C, *s)`` with ``len(s) == spatial_dims``: C feature maps per leading index.
        spatial_dims: how many trailing dimensions are spatial.
        center: subtract each channel's mean over positions before the SVD
            (pytorch-grad-cam's choice; the paper does not).

    Returns:
        ``(..., *s)``: ``M v_1``, where ``M`` is the ``(positions, C)`` matrix
        of the (centred) features and ``v_1`` its first right singular vector.
        Sign rule: the SVD leaves the sign of ``v_1`` arbitrary; it is chosen
        so that the projection correlates non-negatively with the channel sum
        of the uncentred features, ``sum_p (M v_1)_p * sum_k F^k_p >= 0``: the
        map is bright where the features are strong. Where that sum is at
        most 1e-4 of ``||M v_1|| * ||sum_k |F^k| ||`` (the channel sum cancels,
        as after a LayerNorm with its initial affine, or is uncorrelated), the
        sign would follow rounding: ``sum_p (M v_1)_p >= 0`` instead.
    """
    spatial = features.shape[features.ndim - spatial_dims :]
    m = features.flatten(features.ndim - spatial_dims).transpose(-1, -2)  # (..., P, C)
    total, size = m.sum(dim=-1), m.abs().sum(dim=-1)  # (..., P): the channel sum, and what it would be uncancelled
    if center:
        m = m - m.mean(dim=-2, keepdim=True)
    try:
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
    except torch.linalg.LinAlgError:
        rows = (~torch.isfinite(m)).reshape(m.shape[0], -1).any(dim=1) if m.ndim > 2 else None
        which = "" if rows is None else f" of image(s) {rows.nonzero().flatten().tolist()[:10]}"
        raise InputError(
            f"Eigen-CAM's SVD failed: the features{which} hold NaN or infinite values "
            "(the model computed them from a finite input); explain a layer with finite outputs, "
            "or run the model in float32 if it overflows in half precision"
        ) from None
    proj = (m @ vh[..., 0, :, None]).squeeze(-1)  # (..., P)
    agree = (proj * total).sum(dim=-1, keepdim=True)
    # No channel sum to follow (a LayerNorm's output with its initial affine sums to 0 at every position):
    # the rule above would follow rounding; there the projection's own sum is made non-negative instead.
    weak = agree.abs() <= 1e-4 * proj.norm(dim=-1, keepdim=True) * size.norm(dim=-1, keepdim=True)
    flip = torch.where(weak, proj.sum(dim=-1, keepdim=True) < 0, agree < 0)
    return torch.where(flip, -proj, proj).unflatten(-1, spatial)


class _EigenBase(BaseCAM):
    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        center: bool = False,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        self.center = center


@register("eigencam")
class EigenCAM(_EigenBase):
    """Eigen-CAM: the activations projected on their first principal component (class-agnostic).

    For activations reshaped to the ``(positions, C)`` matrix ``M = U S V^T``:

        L = ReLU(M v_1)       (v_1: first right singular vector)

    No gradients; the map does not depend on the target (every target of an
    image gets the same map). The paper takes the SVD of the raw activations
    (the default); ``center=True`` subtracts the channel means first, as
    pytorch-grad-cam does. Sign rule: see :func:`first_component`.

    Args:
        center: centre each channel over positions before the SVD.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        k = ctx.scores.shape[1]
        out = {}
        for name, a in ctx.activations.items():
            m = first_component(a, a.ndim - 2, self.center)  # (N, *s)
            out[name] = m.unsqueeze(1).expand(-1, k, *m.shape[1:])
        return out


@register("eigengradcam")
class EigenGradCAM(_EigenBase):
    """EigenGrad-CAM: the first principal component of the gradient-weighted activations.

        L = ReLU(M v_1),   M: the ``(positions, C)`` matrix of ``g^k_ij A^k_ij``, ``g = dS/dA``

    Class-specific through the gradients (the pytorch-grad-cam method of that
    name). Centring and the sign rule as in :class:`EigenCAM` /
    :func:`first_component` (here the sign follows the HiResCAM map
    ``sum_k g^k A^k``).

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, maps ``(N, K, *s)``.
    """

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.gradients is not None
        return {
            n: first_component(ctx.gradients[n] * a.unsqueeze(1), a.ndim - 2, self.center)
            for n, a in ctx.activations.items()
        }
