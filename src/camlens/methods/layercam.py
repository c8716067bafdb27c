"""LayerCAM (Jiang et al., IEEE TIP 2021), with its multi-layer fusion."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize, upsample
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, CAMResult
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LayerCAM"]


@register("layercam")
class LayerCAM(BaseCAM):
    """LayerCAM: activations weighted position by position by their positive gradients.

        L_ij = ReLU(sum_k ReLU(g^k_ij) A^k_ij),   g^k = dS/dA^k

    Multi-layer fusion (paper, eq. 9): with several layers and ``fuse=None``
    (the default) ``result.fused`` is the element-wise maximum over layers of
    the upsampled maps scaled as ``tanh(gamma * L / max(L))`` (``gamma=2``),
    which lifts the small values of shallow layers; the scaling is applied to
    every layer (as torchcam does), and the fused map is min-max normalized
    when ``normalize=True``. Give ``fuse="mean"|"max"|"product"`` for the
    engine's plain fusion of the normalized maps instead.

    Args:
        gamma: the tanh scale of the fusion.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, maps ``(N, K, *s)``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        gamma: float = 2.0,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if not gamma > 0:
            raise ValueError(f"gamma={gamma!r} must be a positive float (the paper uses 2)")
        self.gamma = float(gamma)

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.gradients is not None
        return {n: (torch.relu(ctx.gradients[n]) * a.unsqueeze(1)).sum(dim=2) for n, a in ctx.activations.items()}

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        result = super()._postprocess(raw, ctx)
        if self.fuse is None and len(raw) > 1:
            scaled = []
            for m in result.raw.values():  # after the ReLU
                m = upsample(m, ctx.x.shape[2:])
                top = m.flatten(2).amax(dim=-1)[(...,) + (None,) * (m.ndim - 2)]
                scaled.append(torch.tanh(self.gamma * m / torch.where(top > 0, top, torch.ones_like(top))))
            fused = torch.stack(scaled).amax(dim=0)
            result.fused = minmax_normalize(fused) if self.normalize else fused
        return result
