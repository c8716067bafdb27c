"""Grad-CAM with element-wise gradients (the ``GradCAMElementWise`` variant of pytorch-grad-cam)."""

from __future__ import annotations

import torch

from camlens.methods.base import BaseCAM, CAMContext
from camlens.methods.registry import register

__all__ = ["GradCAMElementWise"]


@register("gradcam-elementwise")
class GradCAMElementWise(BaseCAM):
    """Grad-CAM with element-wise gradients: ReLU of each gradient-activation product, then sum.

        L_ij = sum_k ReLU(g^k_ij A^k_ij),   g^k = dS/dA^k

    The ReLU inside the sum (per channel and position) is what differs from
    HiResCAM, whose ReLU acts on the channel sum.

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, maps ``(N, K, *s)``.
    """

    def layer_maps(self, ctx: CAMContext) -> dict[str, torch.Tensor]:
        assert ctx.gradients is not None
        return {n: torch.relu(ctx.gradients[n] * a.unsqueeze(1)).sum(dim=2) for n, a in ctx.activations.items()}
