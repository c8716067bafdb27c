"""Shared helpers of the metrics: input checks, a seeded saliency order, class probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.errors import InputError

__all__ = ["check_images_maps", "class_probs", "resolve_classes", "saliency_rank"]


def check_images_maps(x: Tensor, maps: Tensor, *, unit: bool = False) -> None:
    """Raise :class:`InputError` unless ``x`` is ``(N, C, H, W)`` and ``maps`` is ``(N, H, W)`` on its device."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x must be an image batch of shape (N, C, H, W), got {shape}")
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise InputError(
            f"maps must be (N, H, W), one map per image, got {shape}; "
            "pass result.maps[layer] of a one-target call (or squeeze the target dimension)"
        )
    if maps.shape[0] != x.shape[0] or maps.shape[1:] != x.shape[2:]:
        raise InputError(
            f"maps has shape {tuple(maps.shape)} but x has shape {tuple(x.shape)}; "
            "maps must be (N, H, W) at the input's resolution (use upsample=True)"
        )
    if maps.device != x.device:
        raise InputError(f"maps is on {maps.device} but x is on {x.device}; move maps with maps.to(x.device)")
    if not torch.isfinite(maps).all():
        raise InputError("maps holds NaN or infinite values; fix the method or its inputs before scoring it")
    if unit and (float(maps.min()) < 0.0 or float(maps.max()) > 1.0):
        raise InputError(
            f"maps must lie in [0, 1] here, got values in [{float(maps.min()):.4g}, {float(maps.max()):.4g}]; "
            "pass min-max normalized maps (normalize=True, or camlens.core.ops.minmax_normalize)"
        )


def saliency_rank(maps: Tensor, seed: int = 0) -> Tensor:
    """The rank of every pixel, most salient first, ties broken by a seeded random order.

    Args:
        maps: ``(N, H, W)`` saliency, or ``(G, N, H, W)``: ``G`` maps of the same
            ``N`` images, ranked at once (map ``g`` ranks as ``saliency_rank(maps[g], seed)``).
        seed: seed of the tie-breaking permutation: among pixels of equal
            saliency, the one earlier in a random permutation of the pixels
            (drawn with ``torch.Generator().manual_seed(seed)``, one per image,
            the same for every map of that image) ranks first. The same seed
            gives the same order on any device.

    Returns:
        ``(N, H*W)`` (or ``(G, N, H*W)``) int64: ``rank[..., n, p] == 0`` for the most salient pixel.
    """
    grouped = maps.ndim == 4
    g, n = (maps.shape[0], maps.shape[1]) if grouped else (1, maps.shape[0])
    p = maps[0, 0].numel() if grouped else maps[0].numel()
    gen = torch.Generator().manual_seed(int(seed))
    shuffle = torch.argsort(torch.rand(n, p, generator=gen), dim=1).to(maps.device).expand(g, n, p)
    flat = maps.reshape(g, n, p).gather(2, shuffle)
    # A stable descending sort keeps the shuffled order among equal values.
    order = shuffle.gather(2, torch.sort(flat, dim=2, descending=True, stable=True).indices)
    rank = torch.empty_like(order)
    rank.scatter_(2, order, torch.arange(p, device=maps.device).expand(g, n, p))
    return rank if grouped else rank[0]


def resolve_classes(
    model: nn.Module, x: Tensor, target: TargetSpec, output: OutputSpec = None, batch_size: int = 512
) -> Tensor:
    """The explained class of each image as ``(N,)`` int64: ``target`` parsed, or the model's prediction."""
    if target is None:
        with torch.no_grad():
            logits = torch.cat([select_output(model(c), output) for c in x.split(batch_size)])
        return logits.argmax(dim=1)
    if callable(target) and not isinstance(target, Tensor):
        raise InputError("metrics need class targets (an int, N ints or None), not a callable")
    with torch.no_grad():
        logits = select_output(model(x[:1]), output)
    fake = logits.new_zeros(x.shape[0], logits.shape[1])
    _, classes, multi = target_scores(fake, target)
    if multi or classes is None:
        shape = tuple(torch.as_tensor(target).shape)
        raise InputError(f"metrics explain one class per image; target has shape {shape}: pass N ints")
    return classes[:, 0]


def class_probs(
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    output: OutputSpec = None,
    batch_size: int = 512,
    *,
    channels_last: bool = False,
) -> Tensor:
    """Softmax probability of ``classes`` for images ``x``, in chunks, under ``torch.inference_mode``.

    Args:
        x: ``(M, C, H, W)``.
        classes: ``(M,)`` class index per image.
        channels_last: feed each chunk in channels-last memory format (for a channels-last model).

    Returns:
        ``(M,)`` probabilities, in ``x``'s floating dtype.
    """
    out = []
    with torch.inference_mode():
        for xc, cc in zip(x.split(batch_size), classes.split(batch_size), strict=True):
            if channels_last:
                xc = xc.contiguous(memory_format=torch.channels_last)
            logits = select_output(model(xc), output)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float, keep double
            out.append(F.softmax(logits, dim=1).gather(1, cc[:, None])[:, 0])
    return torch.cat(out).to(x.dtype if x.is_floating_point() else torch.float32)
