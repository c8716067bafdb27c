"""IS-CAM: Integrated Score-CAM (Naidu et al., arXiv:2010.03023, 2020)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.errors import InputError
from camlens.methods._perturb import DEFAULT_MEMORY_BUDGET
from camlens.methods._sampling import check_n_samples
from camlens.methods.base import CAMContext, CAMOptions
from camlens.methods.registry import register
from camlens.methods.scorecam import ScoreCAM

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ISCAM", "PATHS"]

#: IS-CAM's integration paths; the first is the default.
PATHS = ("cumulative", "linear")


def path_coefficients(n_samples: int, path: str) -> list[float]:
    """The T mask scales ``c_1 .. c_T`` of IS-CAM's integration path.

    ``"cumulative"``: ``c_i = sum_{j=1..i} j / T = i (i + 1) / (2 T)``, the
    mask accumulated step by step as torchcam's ``ISCAM`` computes it (it grows
    past 1: ``c_T = (T + 1) / 2``). ``"linear"``: ``c_i = i / T``, the straight
    path from the black baseline to the full mask of integrated gradients'
    Riemann sum.
    """
    if path == "linear":
        return [i / n_samples for i in range(1, n_samples + 1)]
    return [i * (i + 1) / (2 * n_samples) for i in range(1, n_samples + 1)]


@register("iscam")
class ISCAM(ScoreCAM):
    """IS-CAM: Score-CAM with each channel's score integrated over scaled copies of its mask.

    For activations ``A^k``, input ``X``, the normalized upsampled mask
    ``H^k = s(Up(A^k))`` (as in :class:`ScoreCAM`) and T path scales ``c_i``
    (:func:`path_coefficients`):

        S^k = 1/T sum_i score(X * c_i H^k)
        w   = S                                  (weighting="probability", default)
        w   = softmax_k(S)                       (weighting="channel-softmax")
        L^c = ReLU(sum_k w_k A^k)

    ``score`` is the target's softmax probability or its logit, as for
    Score-CAM. Path: the default ``"cumulative"`` accumulates the mask over
    the steps (``c_i = i (i + 1) / (2T)``), which is what torchcam's ``ISCAM``
    computes (its docstring writes the sum from ``j = 0`` to ``i - 1``, one
    step less than its code; camlens follows the code). ``path="linear"``
    takes ``c_i = i / T``, the straight path of integrated gradients that
    the paper's "integration" motivates. With ``weighting="channel-softmax"``
    and ``skip_constant=False``, the default path is torchcam's ``ISCAM``
    (which subtracts the clean logit, a shift the softmax ignores).

    Constant channels: with ``skip_constant=True`` (default) weight 0; with
    ``False`` their all-zero mask stays all zero on the path, and one pass of
    the zero input scores them all.

    Cost: T times Score-CAM's masked passes, in the same batched chunks.

    Args:
        n_samples: T, integration steps (default 10, torchcam's).
        path: ``"cumulative"`` or ``"linear"``.
        (the rest as in :class:`ScoreCAM`)

    Shapes: activations ``(N, C, *s)``, weights ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    accepts_eigen_smooth = True  # the Score-CAM engine's weights over channels: BaseCAM._combine

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        n_samples: int = 10,
        path: str = "cumulative",
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
        check_n_samples(n_samples, "integration steps")
        if path not in PATHS:
            raise InputError(f"path={path!r} is not one of {list(PATHS)}")
        self.n_samples = n_samples
        self.path = path

    def _variants(self) -> int:
        return self.n_samples

    def _prepare(self, ctx: CAMContext) -> Tensor:
        return torch.tensor(path_coefficients(self.n_samples, self.path), dtype=torch.float64, device=ctx.x.device)

    def _vary(self, masks: Tensor, variant: Tensor, state: Any) -> Tensor:
        return masks * state[variant].to(masks.dtype).view(-1, *([1] * (masks.ndim - 1)))
