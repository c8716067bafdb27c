"""LeGrad (Bousselham et al., 2024, arXiv:2404.03214): attention-gradient maps of vision transformers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from threading import get_ident
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.core.capture import capture, target_gradients
from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize, upsample
from camlens.core.targets import TargetSpec, select_output, target_scores
from camlens.core.tokens import find_grid
from camlens.errors import InputError, LayerNotUsedError, LayerShapeError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, CAMResult
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LeGrad", "default_readout"]

Readout = Callable[[Tensor], Tensor]


def default_readout(model: nn.Module) -> Readout | None:
    """The model's own head applied to a block's tokens ``(N, T, D)`` -> logits, for models camlens recognizes.

    torchvision ``VisionTransformer``: ``heads(encoder.ln(t)[:, 0])`` (its class
    token); timm vision transformers: ``forward_head(norm(t))`` (timm's own
    pooling). ``None`` for other models (pass ``readout=``).
    """
    encoder, heads = getattr(model, "encoder", None), getattr(model, "heads", None)
    if isinstance(getattr(encoder, "ln", None), nn.Module) and isinstance(heads, nn.Module):
        ln = encoder.ln  # type: ignore[union-attr]
        return lambda t: heads(ln(t)[:, 0])
    forward_head, norm = getattr(model, "forward_head", None), getattr(model, "norm", None)
    if callable(forward_head) and isinstance(norm, nn.Module):
        return lambda t: forward_head(norm(t))
    return None


@dataclass
class _Attention(CAMContext):
    """A context that also holds each block's relevance ``(N, K, h, w)``."""

    relevance: dict[str, Tensor] = field(default_factory=dict)


@register("legrad")
class LeGrad(BaseCAM):
    """LeGrad: positive gradients of each block's own prediction to its attention probabilities.

    For a transformer block ``l`` with self-attention probabilities
    ``A^l`` ``(heads, queries, keys)`` and its tokens ``z^l``, the block's
    prediction is the model's head read off those tokens,
    ``s^l = readout(z^l)`` (for a class-token ViT, ``head(norm(z^l_cls))``;
    for the last block it is the model's own score), and

        E^l_k = 1/(heads * queries) sum_h sum_q ReLU(d s^l_c / d A^l_hqk)
        E = 1/L sum_l E^l      (the prefix keys dropped, the patch keys on the (h, w) grid)

    The attention values themselves are not multiplied in (the paper's
    choice). ``result.maps[block]`` holds ``E^l`` per block;
    ``result.fused`` (and ``result.map``) the mean ``E`` over the blocks
    given, upsampled and min-max normalized (``fuse=`` replaces it by the
    engine's fusion of the normalized per-block maps).

    The attention is the block's ``nn.MultiheadAttention`` (torchvision's
    ViT, ``nn.TransformerEncoderLayer``, custom blocks) or timm's
    ``Attention`` (timm's ViT, DeiT, ...): during the call its output is
    recomputed from explicit probabilities ``softmax(QK^T/sqrt(d))`` (equal
    to PyTorch's fused kernels up to rounding), so that their gradient
    exists; no masks, no active attention dropout. One forward pass; one batched
    backward pass for all blocks and targets.

    Conventions: torchcam's ``LeGrad`` reads every block with
    ``heads(ln(mean_t z^l_t))``, the mean over all tokens, even for
    class-token models whose head reads the class token (its last-block
    score is then not the model's); here the default readout is the model's
    own head (:func:`default_readout`), and ``readout=`` takes torchcam's or
    any other. The prefix (class, register) tokens are found from the token
    count and the input size (:func:`camlens.core.tokens.find_grid`) unless
    ``prefix_tokens=`` is given.

    Args:
        layers: the transformer blocks (each returning tokens ``(N, T, D)``
            and holding exactly one self-attention module); required.
        readout: tokens ``(N, T, D)`` -> logits ``(N, M)``; ``None``: the model's head.
        prefix_tokens: leading non-patch tokens to drop (``None``: found).
        (``relu=``, ``upsample=``, ``normalize=``, ``fuse=``, ``output=`` as in :class:`BaseCAM`)

    Raises:
        InputError: no layers, ``reshape=``/``eigen_smooth=`` given, or no readout for this model.
        LayerShapeError: a block without one self-attention module, with masks, or not on tokens.

    Shapes: tokens ``(N, T, D)``, attention ``(N, heads, T, T)``, maps ``(N, K, h, w)``.
    """

    families = ("vit",)
    accepts_reshape = False
    accepts_eigen_smooth = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        readout: Readout | None = None,
        prefix_tokens: int | None = None,
        **options: Unpack[CAMOptions],
    ) -> None:
        if options.get("reshape") is not None:
            raise InputError("LeGrad reads token blocks itself; reshape= is not taken")
        if layers is None:
            raise InputError(_no_blocks_message(model))
        super().__init__(model, layers, **options)
        self.attention: dict[str, nn.Module] = {name: _self_attention(name, b) for name, b in self.layers.items()}
        self.readout = readout if readout is not None else default_readout(self.model)
        if self.readout is None:
            raise InputError(
                f"LeGrad does not know how {type(self.model).__name__} reads its prediction off a block's tokens; "
                "pass readout=lambda t: model.head(model.norm(t)[:, 0]) (tokens (N, T, D) -> logits (N, M))"
            )
        if prefix_tokens is not None and (isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int)
                                          or prefix_tokens < 0):  # fmt: skip
            raise InputError(f"prefix_tokens={prefix_tokens!r} must be an int >= 0 or None")
        self.prefix_tokens = prefix_tokens

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        with _explicit_attention(self.attention) as probs, capture(self.model, self.layers, lazy=False) as cap:
            logits = select_output(self.model(x), self.output)
            scores, classes, multi = target_scores(logits, target, top_k)
        missing = [n for n in self.layers if n not in cap.activations or n not in probs]
        if missing:
            raise LayerNotUsedError(f"block(s) {missing} or their attention did not run in the forward pass")
        assert self.readout is not None
        k = scores.shape[1]
        block_scores = []
        for name in self.layers:
            tokens = cap.activations[name]
            if tokens.ndim != 3:
                raise LayerShapeError(
                    f"LeGrad block {name!r} returns shape {tuple(tokens.shape)}, not tokens (N, T, D)"
                )
            own = self.readout(tokens)
            block_scores.append(own.gather(1, classes) if classes is not None else target_scores(own, target, None)[0])
        grads = target_gradients(torch.cat(block_scores, dim=1), [probs[n] for n in self.layers])
        relevance = {}
        for i, name in enumerate(self.layers):
            g = grads[i]
            if g is None:
                raise LayerNotUsedError(f"block {name!r}'s own prediction does not depend on its attention")
            e = torch.relu(g[:, i * k : (i + 1) * k]).mean(dim=(2, 3))  # (N, K, keys)
            relevance[name] = self._grid(name, e, x)
        return _Attention(
            self.model, x, logits.detach(), scores.detach(), classes, {}, None, target, multi, relevance=relevance
        )

    def _grid(self, name: str, e: Tensor, x: Tensor) -> Tensor:
        """Relevance over keys ``(N, K, T)`` -> over the patch grid ``(N, K, h, w)``."""
        t = e.shape[-1]
        if self.prefix_tokens is None:
            prefix, h, w = find_grid(t, x.shape[2:])
        else:
            prefix, side = self.prefix_tokens, math.isqrt(max(t - self.prefix_tokens, 0))
            h = w = side
            if side * side != t - prefix or side == 0:
                raise LayerShapeError(
                    f"block {name!r}: {t} tokens minus prefix_tokens={prefix} is not a square grid; "
                    "pass prefix_tokens=None to find the grid from the input size"
                )
        return e[..., prefix:].unflatten(-1, (h, w))

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert isinstance(ctx, _Attention)
        return dict(ctx.relevance)

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        result = super()._postprocess(raw, ctx)
        if self.fuse is None:
            mean = torch.stack(list(result.raw.values())).mean(dim=0)
            mean = upsample(mean, ctx.x.shape[2:]) if self.upsample else mean
            result.fused = minmax_normalize(mean) if self.normalize else mean
        return result


def _self_attention(name: str, block: nn.Module) -> nn.Module:
    """The one self-attention module inside ``block`` (``nn.MultiheadAttention`` or timm's ``Attention``)."""
    found = [m for m in block.modules() if isinstance(m, nn.MultiheadAttention) or _is_timm_attention(m)]
    if len(found) != 1:
        raise LayerShapeError(
            f"LeGrad block {name!r} ({type(block).__name__}) holds {len(found)} self-attention modules "
            "(nn.MultiheadAttention or timm Attention); give transformer blocks with exactly one each"
        )
    mha = found[0]
    if isinstance(mha, nn.MultiheadAttention) and (
        not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn
    ):
        raise LayerShapeError(
            f"LeGrad block {name!r}: attention with kdim/vdim, bias_k or add_zero_attn is not supported"
        )
    return mha


def _attention_blocks(model: nn.Module) -> list[str]:
    """The names of ``model``'s transformer blocks: the outermost modules holding exactly one self-attention."""
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention) or _is_timm_attention(m)]
    held: dict[str, int] = {}
    for name in attention:
        parts = name.split(".")
        for i in range(1, len(parts)):
            held[".".join(parts[:i])] = held.get(".".join(parts[:i]), 0) + 1
    blocks = []
    for name in attention:
        parts = name.split(".")
        outer = [".".join(parts[:i]) for i in range(1, len(parts)) if held[".".join(parts[:i])] == 1]
        if outer:
            blocks.append(outer[0])
    return blocks


def _no_blocks_message(model: nn.Module) -> str:
    """What to pass as ``layers=`` when none was given: this model's own blocks, or why there are none."""
    blocks, kind = _attention_blocks(model), type(model).__name__
    if not blocks:
        return (
            f"LeGrad needs the transformer blocks to read (layers=), and {kind} holds no nn.MultiheadAttention "
            "or timm Attention module in a block of its own; LeGrad applies to ViTs built of those"
        )
    shown = ", ".join(blocks) if len(blocks) <= 4 else f"{blocks[0]}, {blocks[1]}, ..., {blocks[-1]}"
    return (
        f"LeGrad needs the transformer blocks to read: pass layers=, e.g. layers={blocks[-2:]!r} "
        f"(the last blocks); {kind}'s {len(blocks)} blocks: {shown}"
    )


def _is_timm_attention(m: nn.Module) -> bool:
    """timm's ``Attention`` (ViT, DeiT, ...): a fused ``qkv`` projection, ``q_norm``/``k_norm``, ``proj``."""
    names = ("qkv", "proj", "q_norm", "k_norm", "num_heads", "head_dim", "scale")
    return all(hasattr(m, a) for a in names) and isinstance(m.qkv, nn.Linear) and isinstance(m.proj, nn.Linear)


@contextmanager
def _explicit_attention(modules: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """For the block's forward passes (this thread), recompute each attention with explicit probabilities.

    Yields ``{name: probabilities (N, heads, T, T)}``, part of the graph that gives the module's output.
    """
    probs: dict[str, Tensor] = {}
    owner, handles = get_ident(), []
    try:
        for name, mha in modules.items():
            make = _recompute_mha if isinstance(mha, nn.MultiheadAttention) else _recompute_timm
            hook = make(name, probs, owner)
            handles.append(mha.register_forward_hook(hook, with_kwargs=True))
        yield probs
    finally:
        for h in handles:
            h.remove()


def _recompute_mha(name: str, probs: dict[str, Tensor], owner: int) -> Callable[..., Any]:
    def hook(mha: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if get_ident() != owner:
            return None
        q, k, v = (list(args) + [kwargs.get(a) for a in ("query", "key", "value")][len(args) :])[:3]
        extra = dict(zip(("key_padding_mask", "need_weights", "attn_mask"), args[3:6], strict=False)) | kwargs
        if not (q is k is v) or extra.get("key_padding_mask") is not None or extra.get("attn_mask") is not None:
            raise LayerShapeError(
                f"LeGrad: the attention of {name!r} is not unmasked self-attention (query is key is value)"
            )
        if extra.get("is_causal"):
            raise LayerShapeError(f"LeGrad: the attention of {name!r} is causal; LeGrad explains image tokens")
        if mha.training and mha.dropout > 0:
            raise LayerShapeError(f"LeGrad: the attention of {name!r} has active dropout; call model.eval() first")
        t = q if mha.batch_first else q.transpose(0, 1)  # (N, T, D)
        n, length, dim = t.shape
        heads = mha.num_heads
        qkv = F.linear(t, mha.in_proj_weight, mha.in_proj_bias).view(n, length, 3, heads, dim // heads)
        qh, kh, vh = qkv.permute(2, 0, 3, 1, 4)  # (N, heads, T, d)
        a = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
        if not a.requires_grad:
            a = a.detach().requires_grad_(True)
        probs[name] = a
        out = F.linear((a @ vh).transpose(1, 2).reshape(n, length, dim), mha.out_proj.weight, mha.out_proj.bias)
        out = out if mha.batch_first else out.transpose(0, 1)
        need, average = extra.get("need_weights", True), extra.get("average_attn_weights", True)
        return out, (a.mean(dim=1) if average else a) if need else None

    return hook


def _recompute_timm(name: str, probs: dict[str, Tensor], owner: int) -> Callable[..., Any]:
    def hook(attn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if get_ident() != owner:
            return None
        extra = dict(zip(("attn_mask", "is_causal"), args[1:3], strict=False)) | kwargs
        if extra.get("attn_mask") is not None or extra.get("is_causal"):
            raise LayerShapeError(
                f"LeGrad: the attention of {name!r} is masked or causal; LeGrad explains image tokens"
            )
        if attn.training and getattr(attn.attn_drop, "p", 0.0) > 0:
            raise LayerShapeError(f"LeGrad: the attention of {name!r} has active dropout; call model.eval() first")
        x = args[0] if args else kwargs["x"]
        n, length, _ = x.shape
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(n, length, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, heads, T, d)
        q, k = attn.q_norm(q), attn.k_norm(k)
        a = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
        if not a.requires_grad:
            a = a.detach().requires_grad_(True)
        probs[name] = a
        out = (a @ v).transpose(1, 2).reshape(n, length, -1)
        norm = getattr(attn, "norm", None)  # timm >= 1.0: scale_norm (an Identity unless enabled)
        if isinstance(norm, nn.Module):
            out = norm(out)
        gate = getattr(attn, "gate", None)
        if gate is not None:
            out = out * F.linear(x, gate.weight, gate.bias).sigmoid()
        return attn.proj_drop(F.linear(out, attn.proj.weight, attn.proj.bias))

    return hook
