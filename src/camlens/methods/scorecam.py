"""Score-CAM (Wang et al., CVPR Workshops 2020, arXiv:1910.01279)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import LayerSpec
from ..ops import minmax_normalize, upsample
from ._perturb import DEFAULT_MEMORY_BUDGET, check_budget, chunks, layout, row_bytes, row_scores
from .base import BaseCAM, CAMContext, CAMOptions, combine
from .registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["WEIGHTINGS", "ScoreCAM"]

#: Score-CAM's channel weightings; the first is the default.
WEIGHTINGS = ("probability", "channel-softmax")


@register("scorecam")
class ScoreCAM(BaseCAM):
    """Score-CAM: each channel weighted by the target's score on the input masked by that channel.

    For activations ``A^k`` and input ``X``:

        H^k = s(Up(A^k))                       (upsample to the input, min-max normalize to [0, 1])
        w_k = softmax(f(X * H^k))_c            (weighting="probability", the default)
        L^c = ReLU(sum_k w_k A^k)

    Weighting. The default follows the paper's algorithm and the authors'
    released code: ``w_k`` is the softmax *probability* of the target class
    given the masked input (no baseline is subtracted: with the paper's black
    baseline the authors' code drops it). ``weighting="channel-softmax"``
    takes the target's logit on each masked input and applies a softmax
    *across channels*, ``w = softmax_k(S^c(X * H^k))``: that is
    pytorch-grad-cam's ScoreCAM (and torchcam's, which subtracts the clean
    logit first, a shift a softmax ignores). The two weightings give
    different maps. A callable target is used as the score unchanged in both.

    Cost: one forward pass per channel and image, run without autograd in
    chunks of ``batch_size`` masked inputs, or as many as fit
    ``memory_budget`` bytes (measured from one row's layer outputs). A channel
    whose activation is constant has an all-zero mask; all such channels
    share the score of the all-zero input, computed once.

    Args:
        weighting: ``"probability"`` or ``"channel-softmax"``.
        batch_size: masked inputs per forward pass (``None``: from the budget).
        memory_budget: bytes one chunk may use (default 512 MiB).
        channels_last: feed the masked 4-D inputs in channels-last memory
            order (``None``: on CPU, where it is faster; the values agree up
            to float rounding).
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, masks ``(N, C, *input_spatial)``,
    weights ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        weighting: str = "probability",
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        channels_last: bool | None = None,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if weighting not in WEIGHTINGS:
            raise InputError(f"weighting={weighting!r} is not one of {list(WEIGHTINGS)}")
        check_budget(memory_budget, batch_size)
        self.weighting = weighting
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.channels_last = channels_last

    def _rows_per_chunk(self, x: Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        per_row = row_bytes(self.model, lambda: self.model(x[:1])) + 2 * x[:1].numel() * x.element_size()
        return max(1, self.memory_budget // per_row)

    def channel_scores(self, ctx: CAMContext, activations: Tensor) -> Tensor:
        """Target scores ``(N, C, K)`` of the input masked by each upsampled, normalized channel."""
        x = ctx.x
        n, c = activations.shape[:2]
        prob = self.weighting == "probability"
        masks = minmax_normalize(upsample(activations, x.shape[2:]))  # (N, C, *S)
        live = masks.flatten(2).amax(dim=-1) > 0  # (N, C): the mask is not all zero
        out = torch.empty(n, c, ctx.scores.shape[1], dtype=ctx.scores.dtype, device=x.device)
        if not bool(live.all()):
            # Constant channels mask the input to all zeros: one forward pass serves them all.
            zero_scores = row_scores(
                ctx, self.model(torch.zeros_like(x[:1])), torch.arange(n, device=x.device), self.output, prob
            )
            out[:] = zero_scores[:, None, :].to(out.dtype)
        rows = live.nonzero()  # (R, 2): image, channel
        per = self._rows_per_chunk(x) if len(rows) else 1
        for sl in chunks(len(rows), per):
            img, ch = rows[sl, 0], rows[sl, 1]
            masked = layout(x[img] * masks[img, ch].unsqueeze(1), self.channels_last)
            out[img, ch] = row_scores(ctx, self.model(masked), img, self.output, prob).to(out.dtype)
        return out

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        maps = {}
        for name, a in ctx.activations.items():
            s = self.channel_scores(ctx, a)  # (N, C, K)
            w = s.softmax(dim=1) if self.weighting == "channel-softmax" else s
            maps[name] = combine(w.transpose(1, 2).to(a.dtype), a)
        return maps
