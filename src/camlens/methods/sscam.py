"""SS-CAM: Smoothed Score-CAM (Wang, Naidu et al., arXiv:2006.14255, 2020)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.methods._perturb import DEFAULT_MEMORY_BUDGET
from camlens.methods._sampling import check_n_samples, check_std, seeded_normal
from camlens.methods.base import CAMContext, CAMOptions
from camlens.methods.registry import register
from camlens.methods.scorecam import ScoreCAM

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SSCAM"]


@register("sscam")
class SSCAM(ScoreCAM):
    """SS-CAM: Score-CAM with each channel's score averaged over Gaussian-noised masks.

    For activations ``A^k``, input ``X``, the normalized upsampled mask
    ``H^k = s(Up(A^k))`` (as in :class:`ScoreCAM`) and T noise fields
    ``delta_t ~ N(0, std^2)`` at the input's resolution:

        S^k = 1/T sum_t score(X * (H^k + delta_t))
        w   = S                                  (weighting="probability", default)
        w   = softmax_k(S)                       (weighting="channel-softmax")
        L^c = ReLU(sum_k w_k A^k)

    ``score`` is the target's softmax probability (``"probability"``) or its
    logit (``"channel-softmax"``), as for Score-CAM. The noise is added to the
    normalized mask and not clipped or renormalized, as torchcam's ``SSCAM``
    does; with ``weighting="channel-softmax"`` and ``skip_constant=False``
    this is torchcam's ``SSCAM`` (torchcam subtracts the clean logit first, a
    shift the softmax ignores).

    Noise: the T fields ``(T, *spatial)`` are drawn on the CPU from ``seed``
    once per call and shared by every channel and image (common random
    numbers). So a map does not depend on the rest of the batch, channels
    with equal masks still share their passes, and the differences between
    channels that the weights compare carry less noise. torchcam draws an
    independent field per image and channel; both are Monte-Carlo estimates
    of the same expectation and agree in the limit of many samples, and
    exactly when given the same fields (the tests check that).

    Constant channels: with ``skip_constant=True`` (default) weight 0, as
    in :class:`ScoreCAM`; with ``False`` their mask is ``0 + delta_t``.

    Cost: T times Score-CAM's masked passes, in the same batched chunks.

    Args:
        n_samples: T, noise fields per mask (default 35, torchcam's).
        std: the noise's standard deviation, on the [0, 1] mask scale (default 2.0, torchcam's).
        seed: the noise seed.
        (the rest as in :class:`ScoreCAM`)

    Shapes: activations ``(N, C, *s)``, noise ``(T, *input_spatial)``, weights
    ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    zero_stays_zero = False
    accepts_eigen_smooth = True  # the Score-CAM engine's weights over channels: BaseCAM._combine

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        n_samples: int = 35,
        std: float = 2.0,
        seed: int = 0,
        weighting: str = "probability",
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        channels_last: bool | None = None,
        skip_constant: bool = True,
        optimize: bool | None = None,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(
            model, layers, weighting=weighting, batch_size=batch_size, memory_budget=memory_budget,
            channels_last=channels_last, optimize=optimize, skip_constant=skip_constant, **options,
        )  # fmt: skip
        self.n_samples = check_n_samples(n_samples, "noise fields per mask")
        self.std = check_std(std, "the noise's standard deviation on the mask")
        self.seed = seed

    def noise(self, x: Tensor) -> Tensor:
        """The T noise fields ``(T, *x.shape[2:])``, ``N(0, std^2)``, the same for every channel and image."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return seeded_normal((self.n_samples, *x.shape[2:]), self.seed, self.std, device=x.device, dtype=dtype)

    def _variants(self) -> int:
        return self.n_samples

    def _prepare(self, ctx: CAMContext) -> Tensor:
        return self.noise(ctx.x)

    def _vary(self, masks: Tensor, variant: Tensor, state: Any) -> Tensor:
        return masks + state[variant].to(masks.dtype)
