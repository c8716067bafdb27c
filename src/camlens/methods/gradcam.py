"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391)."""

from __future__ import annotations

from torch import Tensor

from camlens.methods.base import BaseCAM
from camlens.methods.registry import register

__all__ = ["GradCAM"]


@register("gradcam")
class GradCAM(BaseCAM):
    """Gradient-weighted class activation map.

    For target score ``y^c`` (pre-softmax) and layer activations ``A`` of shape
    ``(C, h, w)``:

        alpha_k^c = 1/(h w) * sum_ij d y^c / d A^k_ij
        L^c = ReLU(sum_k alpha_k^c A^k)

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, weights
    ``(N, K, C)``, maps ``(N, K, *s)`` before post-processing.

    Example:
        >>> import torch, camlens
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> result = camlens.GradCAM(model, layers="0")(torch.rand(2, 1, 8, 8))
        >>> result.maps["0"].shape
        torch.Size([2, 8, 8])
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients.flatten(3).mean(dim=-1)
