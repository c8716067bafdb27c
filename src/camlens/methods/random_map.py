"""A random-map baseline: what a metric gives a map that knows nothing about the image or the class."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.errors import InputError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, combine
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RANDOM_MODES", "RandomCAM"]

#: what the random map is made of; the first is the default.
RANDOM_MODES = ("uniform", "weights")


@register("random")
class RandomCAM(BaseCAM):
    """A seeded random map: the baseline a faithfulness metric should beat.

    ``mode="uniform"`` (default): i.i.d. ``U(0, 1)`` values at the layer's
    resolution, independent of the image, the model and the target, then
    upsampled and normalized like any map:

        L = U,   U_ij ~ U(0, 1)

    ``mode="weights"``: random channel weights on the layer's activations, a
    map with the layer's spatial structure but no class information (what
    pytorch-grad-cam's ``RandomCAM`` computes):

        L = ReLU(sum_c w_c A^c),   w_c ~ U(-1, 1)

    The draws come from ``seed`` on the CPU once per call and are shared by
    every image and target of the call (pytorch-grad-cam draws weights per
    image): so an image's map does not depend on the rest of the batch or on
    the device, and one seed reproduces a baseline exactly. Use several seeds
    to see the spread of a metric under random maps. Its cost is one forward
    pass (no backward).

    Args:
        mode: ``"uniform"`` or ``"weights"``.
        seed: the random seed.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, maps ``(N, K, *s)``.

    Example:
        >>> import torch, camlens
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> camlens.RandomCAM(model, "1", seed=3)(torch.rand(2, 1, 8, 8)).map.shape
        torch.Size([2, 8, 8])
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        mode: str = "uniform",
        seed: int = 0,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if mode not in RANDOM_MODES:
            raise InputError(f"mode={mode!r} is not one of {list(RANDOM_MODES)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"seed={seed!r} must be an int")
        self.mode = mode
        self.seed = seed

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        k = ctx.scores.shape[1]
        gen = torch.Generator().manual_seed(self.seed)
        out = {}
        for name, a in ctx.activations.items():  # layers in a fixed order: each gets its own draw
            dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
            if self.mode == "uniform":
                u = torch.rand(a.shape[2:], generator=gen, dtype=torch.float64).to(device=a.device, dtype=dtype)
                out[name] = u.expand(a.shape[0], k, *a.shape[2:])
            else:
                w = (2 * torch.rand(a.shape[1], generator=gen, dtype=torch.float64) - 1).to(a.device, dtype)
                out[name] = combine(w.expand(a.shape[0], k, -1), a.to(dtype))
        return out
