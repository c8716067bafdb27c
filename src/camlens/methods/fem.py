"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020, doi:10.1109/IPTA50016.2020.9286629)."""

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

__all__ = ["FEM", "FEM_WEIGHTINGS"]

#: FEM's combinations of masks and activations; the first is the default.
FEM_WEIGHTINGS = ("channel-mean", "mask-fraction")


@register("fem")
class FEM(BaseCAM):
    """FEM: each channel's k-sigma outlier mask, weighted by the channel's mean activation.

    For activations ``A^c`` of one image, with ``mu_c`` and ``sigma_c`` the
    mean and (population) standard deviation of ``A^c`` over positions:

        B^c = 1[A^c > mu_c + k sigma_c]             (the channel's unusually strong responses)
        L   = sum_c mu_c B^c                         (weighting="channel-mean", default)
        L   = sum_c mean(B^c) A^c                    (weighting="mask-fraction")

    The default is the paper's and its authors' code (binary maps weighted by
    the channels' global average pooling). ``"mask-fraction"`` is what
    pytorch-grad-cam's ``FEM`` computes instead: the activations weighted by
    the fraction of positions above the threshold.

    FEM is class-agnostic: it uses neither gradients nor the target, so every
    target of an image gets the same map (``top_k=3`` repeats it three
    times); the targets are still reported in the result. Its cost is one
    forward pass.

    Args:
        k: the threshold in standard deviations above the mean (default 2, the paper's).
        weighting: ``"channel-mean"`` or ``"mask-fraction"``.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, masks ``(N, C, *s)``, maps ``(N, K, *s)``.

    Example:
        >>> import torch, camlens
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> camlens.FEM(model, "1")(torch.rand(2, 1, 8, 8)).map.shape
        torch.Size([2, 8, 8])
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        k: float = 2.0,
        weighting: str = "channel-mean",
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise InputError(f"k={k!r} must be a number of standard deviations, e.g. 2")
        if weighting not in FEM_WEIGHTINGS:
            raise InputError(f"weighting={weighting!r} is not one of {list(FEM_WEIGHTINGS)}")
        self.k = float(k)
        self.weighting = weighting

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        k_targets = ctx.scores.shape[1]
        out = {}
        for name, a in ctx.activations.items():
            flat = a.flatten(2)  # (N, C, P)
            mean = flat.mean(dim=-1, keepdim=True)
            std = flat.std(dim=-1, correction=0, keepdim=True)
            binary = (flat > mean + self.k * std).to(a.dtype)  # (N, C, P)
            if self.weighting == "channel-mean":
                m = torch.einsum("nc,ncp->np", mean[..., 0], binary)
            else:
                m = torch.einsum("nc,ncp->np", binary.mean(dim=-1), flat)
            out[name] = m.view(a.shape[0], 1, *a.shape[2:]).expand(-1, k_targets, *a.shape[2:])
        return out
