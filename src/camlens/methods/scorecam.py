"""Score-CAM (Wang et al., CVPR Workshops 2020, arXiv:1910.01279)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens._util.threads import ordered_map
from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize, upsample
from camlens.errors import InputError
from camlens.methods._perturb import DEFAULT_MEMORY_BUDGET, check_budget, chunks, layout, row_bytes, row_scores
from camlens.methods._rerun import InferenceCopy
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["WEIGHTINGS", "ScoreCAM"]

#: rows per pass through the optimized copy on the CPU when ``batch_size`` is not given: oneDNN's
#: convolutions gain little from larger chunks there, and smaller chunks stay in cache. Benchmark
#: ResNet at 64x64, 2 threads, ms per row over 6 interleaved rounds (median): 0.97 at 128 rows, 0.92
#: at 192, 0.88 at 256, 0.92 at 384, 1.01 at 512 (its 2x2 ``layer4`` runs as matrix products, which
#: gain from more rows; before that change 128-224 rows were best).
CPU_MAX_ROWS = 256

#: the fewest rows a chunk keeps when chunks run side by side on the CPU (fewer: one chunk at a time).
MIN_ROWS_PER_WORKER = 16

#: Score-CAM's channel weightings; the first is the default.
WEIGHTINGS = ("probability", "channel-softmax")


def _mask_upsampler(
    spatial: Sequence[int], size: Sequence[int], dtype: torch.dtype, device: torch.device
) -> Callable[[Tensor], Tensor]:
    """A function resizing ``(R, *spatial)`` maps to ``size`` as :func:`camlens.core.ops.upsample` does.

    Bilinear interpolation is separable, so for 2-D maps it is two small matrix
    products with the 1-D interpolation matrices (rows: the response to each
    one-hot input), which is several times faster on many small maps than
    ``F.interpolate``; other ranks use ``upsample``.
    """
    spatial, size = tuple(spatial), tuple(int(v) for v in size)
    if len(spatial) != 2 or spatial == size:
        return lambda k: upsample(k.unsqueeze(1), size)[:, 0]

    def matrix(n_in: int, n_out: int) -> Tensor:
        eye = torch.eye(n_in, dtype=dtype, device=device).unsqueeze(0)  # (1, n_in, n_in): one-hot rows
        return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()  # (out, in)

    uh, uwt = matrix(spatial[0], size[0]), matrix(spatial[1], size[1]).T.contiguous()
    return lambda k: uh @ k @ uwt


def distinct_masks(keys: Tensor, scored: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The distinct (image, normalized map) pairs among the ``scored`` ``(N, C)`` channels of ``keys`` ``(N, C, s)``.

    Returns ``(img0, ch0, img, ch, inverse)``: every scored (image, channel),
    the first of each distinct pair, and for each scored pair the index of its
    distinct one (so ``scores_of_distinct[inverse]`` fills every scored channel).
    """
    img0, ch0 = scored.nonzero().unbind(1)
    # float32 holds bf16/half keys and image indices exactly.
    keyed = torch.cat([img0[:, None].to(keys.dtype), keys[img0, ch0]], dim=1)  # (scored, 1 + s)
    _, inverse = torch.unique(keyed, dim=0, return_inverse=True)
    first = torch.full((len(keyed),), len(img0), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(img0), device=keys.device), "amin")
    first = first[first < len(img0)]  # (R,) the first scored channel of each distinct mask
    return img0, ch0, img0[first], ch0[first], inverse


def scores_to_weights(s: Tensor, weighting: str, live: Tensor | None) -> Tensor:
    """Weights ``(N, K, C)`` from channel scores ``(N, C, K)``; channels not ``live`` ``(N, C)`` get 0.

    With ``"channel-softmax"`` the softmax runs over the live channels only, and
    an image with none gets zero weights.
    """
    if live is None:
        return (s.softmax(dim=1) if weighting == "channel-softmax" else s).transpose(1, 2)
    live = live[..., None]  # (N, C, 1)
    if weighting == "channel-softmax":
        s = s.masked_fill(~live, float("-inf")).softmax(dim=1)
        s = torch.where(live.any(dim=1, keepdim=True), s, torch.zeros_like(s))
    return torch.where(live, s, torch.zeros_like(s)).transpose(1, 2)


def _non_constant(activations: Tensor, keys: Tensor | None = None) -> Tensor:
    """``(N, C)``: whether each channel's min-max normalized map is not all zero (the channel is not constant)."""
    keys = minmax_normalize(activations.flatten(2)) if keys is None else keys
    return keys.amax(dim=-1) > 0


def side_by_side(fit: int, rows: int, batch_size: int | None) -> tuple[int, int]:
    """``(rows per chunk, chunks run at once)`` for ``rows`` masked passes through the optimized copy.

    ``fit`` is the rows one chunk may have (the memory budget's, or
    ``batch_size``). As many chunks at once as torch has threads, one thread
    each (:func:`camlens._util.threads.ordered_map`), when every chunk keeps
    at least :data:`MIN_ROWS_PER_WORKER` rows; the chunks in flight share
    the memory budget. The model itself runs one chunk at a time: its hooks
    and modules are the user's, not known to be thread-safe; the optimized
    copy (CPU only) has no hooks and serves several threads.
    """
    per = fit if batch_size is not None else min(fit, CPU_MAX_ROWS)
    workers = max(1, min(torch.get_num_threads(), per // MIN_ROWS_PER_WORKER, -(-rows // per)))
    if workers > 1 and batch_size is None:
        per = min(per, fit // workers)
    return per, workers


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

    Constant channels. A channel whose activation is the same at every
    position has no mask: its normalized map is 0/0, which the paper leaves
    undefined. By default (``skip_constant=True``) such a channel gets weight
    0, as the authors' released code does (it skips the channel); with
    ``weighting="channel-softmax"`` the softmax runs over the other channels.
    ``skip_constant=False`` takes its mask as all zeros (the black baseline)
    and weights the channel by the score of the all-zero input, which is
    what pytorch-grad-cam and torchcam do (and camlens did before); on a
    model with a dead filter the two differ (16 % of the map in the issue
    that added the keyword).

    Cost: one forward pass per channel and image, run without autograd in
    chunks of ``batch_size`` masked inputs, or as many as fit
    ``memory_budget`` bytes (measured from one row's layer outputs). Two
    savings are exact:

    - masks are computed from each channel's min-max normalized map at layer
      resolution (upsampling commutes with that normalization), so channels
      of one image whose normalized maps are equal (say, the same single
      active cell) share one mask and one forward pass; with
      ``skip_constant=False`` a channel whose activation is constant has an
      all-zero mask, and all such channels share the score of the all-zero
      input, computed once;
    - on the CPU, the passes run through an inference-optimized copy of the
      model (BatchNorm folded, oneDNN convolutions; see ``optimize``).

    Args:
        weighting: ``"probability"`` or ``"channel-softmax"``.
        batch_size: masked inputs per forward pass (``None``: from the budget); through the optimized
            copy, as many such passes run at once as torch has threads (``None``: they share the budget).
        memory_budget: bytes the chunks in flight may use (default 512 MiB).
        channels_last: feed the masked 4-D inputs in channels-last memory
            order (``None``: on CPU when the model itself runs the passes,
            where it is faster; the values agree up to float rounding).
        skip_constant: give constant channels weight 0 (the authors' code; default)
            instead of the all-zero input's score (the peers).
        optimize: run the masked passes through a cached deep copy of the
            model prepared by ``torch.fx.experimental.optimization.
            optimize_for_inference``, with convolutions on maps smaller than
            their kernel run as matrix products. ``None`` (default): where it applies
            (float32 on the CPU, every module in eval mode, no forward hooks,
            traceable by ``torch.fx``) and the copy reproduces the model's
            output on the explained input to 1e-4, checked every call;
            otherwise the model itself. The copy is first built for a call
            with at least 512 extra passes (it costs about what a few hundred
            save), then reused while the model's tensors are unchanged.
            ``True``: require it (an
            :class:`InputError` says why it cannot be used). ``False``: never.
            ``self.inference_copy.last_used`` says which ran. The copy holds a second
            set of the weights while the method object lives.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, masks ``(N, C, *input_spatial)``,
    weights ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False
    accepts_eigen_smooth = True

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        weighting: str = "probability",
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        channels_last: bool | None = None,
        optimize: bool | None = None,
        skip_constant: bool = True,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if weighting not in WEIGHTINGS:
            raise InputError(f"weighting={weighting!r} is not one of {list(WEIGHTINGS)}")
        if not isinstance(skip_constant, bool):
            raise InputError(f"skip_constant={skip_constant!r} must be True or False")
        check_budget(memory_budget, batch_size)
        self.skip_constant = skip_constant
        self.weighting = weighting
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.channels_last = channels_last
        self.inference_copy = InferenceCopy(optimize)

    def _rows_per_chunk(self, x: Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        per_row = row_bytes(self.model, lambda: self.model(x[:1])) + 2 * x[:1].numel() * x.element_size()
        return max(1, self.memory_budget // per_row)

    # ---- the hooks SS-CAM and IS-CAM override ------------------------------------------

    #: masked passes per distinct mask; their scores are averaged (SS-CAM: noise samples, IS-CAM: steps).
    def _variants(self) -> int:
        return 1

    def _prepare(self, ctx: CAMContext) -> Any:
        """What :meth:`_vary` needs, made once per call (SS-CAM: the noise fields)."""
        return None

    def _vary(self, masks: Tensor, variant: Tensor, state: Any) -> Tensor:
        """The masks ``(rows, *S)`` of each row's ``variant`` ``(rows,)``; Score-CAM: the masks themselves."""
        return masks

    #: whether an all-zero mask stays all zero in every variant (then one pass scores every constant channel).
    zero_stays_zero: bool = True

    # ---- the masked passes -------------------------------------------------------------

    def channel_scores(self, ctx: CAMContext, activations: Tensor) -> Tensor:
        """Target scores ``(N, C, K)`` of the input masked by each upsampled, normalized channel.

        A constant channel's mask is all zero (its normalized map is 0/0, taken
        as zeros); with ``skip_constant=True`` its score is not computed (it is
        left at 0 and its weight is 0 whatever the score).
        """
        x = ctx.x
        n, c = activations.shape[:2]
        # Normalizing first makes equal keys give bit-equal masks (min-max is affine-invariant and
        # bilinear upsampling affine-equivariant, so the mask is the same function of the key).
        keys = minmax_normalize(activations.flatten(2))  # (N, C, s)
        live = _non_constant(activations, keys)  # (N, C): the mask is not all zero
        out = torch.zeros(n, c, ctx.scores.shape[1], dtype=ctx.scores.dtype, device=x.device)
        dead = not self.skip_constant and not bool(live.all())
        shared_zero = dead and self.zero_stays_zero  # constant channels: the all-zero input, once
        scored = live if not dead or shared_zero else torch.ones_like(live)
        exact = keys.to(torch.float64 if keys.dtype == torch.float64 else torch.float32)
        img0, ch0, img, ch, inverse = distinct_masks(exact, scored)
        rows = len(img) * self._variants() + shared_zero
        runner = self.inference_copy.module(self.model, x, ctx.logits, self.output, rows=rows)
        if shared_zero:
            zero_scores = row_scores(
                ctx,
                runner(torch.zeros_like(x[:1])),
                torch.arange(n, device=x.device),
                self.output,
                self.weighting == "probability",
            )
            out[:] = zero_scores[:, None, :].to(out.dtype)
        if len(img):
            out[img0, ch0] = self._masked_scores(ctx, runner, exact, img, ch, activations.shape[2:])[inverse]
        return out

    def _masked_scores(
        self, ctx: CAMContext, runner: nn.Module, keys: Tensor, img: Tensor, ch: Tensor, spatial: Sequence[int]
    ) -> Tensor:
        """Scores ``(R, K)`` of masks ``keys[img, ch]``, averaged over variants; chunks: :func:`side_by_side`."""
        x = ctx.x
        v = self._variants()
        cl = False if runner is not self.model and self.channels_last is None else self.channels_last
        sums = torch.zeros(len(img), ctx.scores.shape[1], dtype=ctx.scores.dtype, device=x.device)
        fit = self._rows_per_chunk(x)  # the budget's rows (or batch_size)
        per, workers = (fit, 1) if runner is self.model else side_by_side(fit, len(img) * v, self.batch_size)
        up = _mask_upsampler(spatial, x.shape[2:], keys.dtype, x.device)
        state = self._prepare(ctx)

        @torch.no_grad()  # grad mode is per thread: a worker's starts enabled
        def run(sl: slice) -> tuple[Tensor, object]:
            r = torch.arange(sl.start, sl.stop, device=x.device)
            mask_of, variant = r // v, r % v  # rows are mask-major: a mask's variants are consecutive
            lo = sl.start // v
            distinct = torch.arange(lo, (sl.stop - 1) // v + 1, device=x.device)
            masks = minmax_normalize(up(keys[img[distinct], ch[distinct]].view(-1, *spatial)), start_dim=1)
            masks = self._vary(masks[mask_of - lo], variant, state)  # (rows, *S)
            masked = x.index_select(0, img[mask_of]).mul_(masks.view(-1, 1, *x.shape[2:]).to(x.dtype))
            return mask_of, runner(layout(masked, cl))

        for mask_of, out in ordered_map(run, chunks(len(img) * v, per), workers):
            s = row_scores(ctx, out, img[mask_of], self.output, self.weighting == "probability")
            sums.index_add_(0, mask_of, s.to(sums.dtype))
        return sums / v if v > 1 else sums

    def channel_weights(self, ctx: CAMContext, activations: Tensor) -> Tensor:
        """Channel weights ``(N, K, C)`` from :meth:`channel_scores` and ``weighting``."""
        live = _non_constant(activations) if self.skip_constant else None
        return scores_to_weights(self.channel_scores(ctx, activations), self.weighting, live)

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        return {name: self._combine(self.channel_weights(ctx, a).to(a.dtype), a) for name, a in ctx.activations.items()}
