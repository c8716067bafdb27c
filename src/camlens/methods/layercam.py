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
    the maps scaled as ``tanh(gamma * L / max(L))`` (``gamma=2``), which lifts
    the small values of shallow layers; the scaling is applied to every layer
    and the fused map is min-max normalized when ``normalize=True``. Give
    ``fuse="mean"|"max"|"product"`` for the engine's plain fusion of the
    normalized maps instead.

    Order of scaling and resizing (``scale=``): by default each map is first
    upsampled to the input's size and then scaled by its own maximum there
    (``scale="after"``; eq. 9 itself does not say at which resolution).
    torchcam scales each map at its layer's resolution, by
    ``tanh(gamma * L_norm)`` of the min-max normalized map, and then resizes
    the scaled maps to the largest layer's grid for the maximum:
    ``scale="before"`` (here normalized by ``max(L)``, equal to torchcam's
    min-max after the ReLU wherever a map's minimum is 0, and resized to the
    input's size, or to the largest layer's grid with ``upsample=False``).
    Both orders agree where every layer already has the fused map's size.

    Args:
        gamma: the tanh scale of the fusion.
        scale: ``"after"`` (upsample, then scale) or ``"before"`` (scale, then upsample; torchcam).
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, maps ``(N, K, *s)``.
    """

    accepts_eigen_smooth = True

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        gamma: float = 2.0,
        scale: str = "after",
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if not gamma > 0:
            raise ValueError(f"gamma={gamma!r} must be a positive float (the paper uses 2)")
        if scale not in ("after", "before"):
            raise ValueError(f"scale={scale!r} must be 'after' (upsample, then scale) or 'before' (torchcam's order)")
        self.gamma = float(gamma)
        self.scale = scale

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.gradients is not None
        return {n: self._combine(torch.relu(ctx.gradients[n]), a) for n, a in ctx.activations.items()}

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        result = super()._postprocess(raw, ctx)
        if self.fuse is None and len(raw) > 1:
            if self.upsample or self.scale == "after":
                size = tuple(ctx.x.shape[2:])
            else:
                size = max((tuple(m.shape[2:]) for m in result.raw.values()), key=lambda s: torch.Size(s).numel())
            scaled = []
            for m in result.raw.values():  # after the ReLU
                if self.scale == "after":
                    m = upsample(m, size)
                top = m.flatten(2).amax(dim=-1)[(...,) + (None,) * (m.ndim - 2)]
                m = torch.tanh(self.gamma * m / torch.where(top > 0, top, torch.ones_like(top)))
                scaled.append(upsample(m, size))
            fused = torch.stack(scaled).amax(dim=0)
            result.fused = minmax_normalize(fused) if self.normalize else fused
        return result
