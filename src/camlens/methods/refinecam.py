"""RefineCAM (Domeniconi et al., 2026, arXiv:2605.14641): the product of one method's maps over several layers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize, upsample
from camlens.errors import InputError
from camlens.methods.base import BaseCAM, CAMContext, CAMResult
from camlens.methods.finercam import _BASE_KEYS, inner_gradient_method
from camlens.methods.registry import register

if TYPE_CHECKING:
    from camlens.methods.base import CAMOptions

__all__ = ["RefineCAM"]


@register("refinecam")
class RefineCAM(BaseCAM):
    """RefineCAM: one gradient method's maps at several layers, normalized and multiplied.

    With ``M_l`` the inner method's map (after its ReLU) at layer ``l``,
    ``U`` bilinear resizing to the input's size and ``N`` min-max
    normalization to [0, 1]:

        R = N( prod_l N(U(M_l)) )

    Deep layers say *what*, shallow ones *where*: the product keeps the fine
    detail of the shallow maps only inside the regions the deep maps find.
    The per-layer maps stay in ``result.maps``; the product is
    ``result.fused`` (and ``result.map``). With one layer it is that layer's
    normalized map.

    Conventions: the paper's code (liuktc/RefineCAM, ``MultiplierMix``) and
    pytorch-grad-cam's ``RefineCAM`` resize each map to the input and
    normalize it before multiplying (the default here). torchcam's
    ``RefineCAM`` normalizes each map at its layer's resolution first and
    resizes it to the largest layer's grid: ``normalize_first=True`` (with
    ``upsample=False`` the common grid is the largest layer's, as in
    torchcam). Grad-CAM++ is the inner method by default, as in all three.

    Args:
        method: the inner gradient method, a registered name or class.
        normalize_first: normalize each layer's map before resizing it (torchcam's order).
        **options: the inner method's keywords and :class:`BaseCAM`'s
            (``fuse=`` is not taken: the fusion is the product).

    Shapes: maps per layer ``(N, K, *s_l)``; fused ``(N, K, H, W)`` (input size,
    or the largest layer's with ``upsample=False``).
    """

    accepts_eigen_smooth = True

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        method: str | type[BaseCAM] = "gradcam++",
        normalize_first: bool = False,
        **options: Any,
    ) -> None:
        if options.get("fuse") is not None:
            raise InputError(f"RefineCAM fuses layers by their product; fuse={options['fuse']!r} is not taken")
        inner = inner_gradient_method("RefineCAM", method)
        self.inner = inner(model, layers, **options)
        base: CAMOptions = {k: v for k, v in options.items() if k in _BASE_KEYS}  # type: ignore[assignment]
        super().__init__(model, layers, **base)
        self.normalize_first = bool(normalize_first)

    def __repr__(self) -> str:
        return f"RefineCAM({self.inner!r})"

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        return self.inner.layer_maps(ctx)

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        result = self.inner._postprocess(raw, ctx)
        if self.upsample:
            size = tuple(ctx.x.shape[2:])
        else:
            size = max((tuple(m.shape[2:]) for m in result.raw.values()), key=lambda s: torch.Size(s).numel())
        parts = []
        for m in result.raw.values():  # after the inner method's ReLU
            m = upsample(minmax_normalize(m), size) if self.normalize_first else minmax_normalize(upsample(m, size))
            parts.append(m)
        fused = torch.stack(parts).prod(dim=0)
        result.fused = minmax_normalize(fused) if self.normalize else fused
        return result
