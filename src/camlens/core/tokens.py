"""Turn token and channels-last layer outputs into ``(N, C, h, w)`` feature maps.

A vision transformer's block outputs ``(N, T, C)``: T tokens of C channels,
where the last ``h * w`` tokens are the patch grid (row-major) and the first
``T - h * w`` are extra tokens (class, register, distillation). A Swin-style
stage outputs ``(N, h, w, C)``. The engine needs ``(N, C, h, w)``; these
helpers find the grid from the input's size and the token count, drop the
extra tokens and move channels first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from torch import Tensor

from camlens.errors import LayerShapeError

__all__ = [
    "MAX_PREFIX_TOKENS",
    "auto_reshape",
    "channels_last_to_maps",
    "find_grid",
    "plausible_grid",
    "tokens_to_maps",
]

#: the most extra tokens searched for before the patch grid (class + distillation + up to 8 registers).
MAX_PREFIX_TOKENS = 10


#: how a patch size P may tile an image side S into g patches: exactly, cropping the edge, or padding it.
_TILINGS: dict[str, Callable[[int, int], int]] = {
    "exact": lambda s, p: s // p if s % p == 0 else -1,
    "crop": lambda s, p: s // p,  # the last partial patch is dropped (timm, torchvision)
    # the image is padded to a multiple of P (Hugging Face Swin): only for strides made by halving,
    # P = 2^k, or 49 tokens of a 32x32 image would read as a padded 7x7 grid of 5-pixel patches
    "pad": lambda s, p: -(-s // p) if p & (p - 1) == 0 else -1,
}


def _patch_for(size: Sequence[int], grid: Sequence[int], tiling: str = "crop") -> int | None:
    """The smallest patch size P that tiles ``size`` into ``grid`` the ``tiling`` way (see :data:`_TILINGS`)."""
    rule = _TILINGS[tiling]
    for p in range(1, max(size) + 1):
        if all(rule(s, p) == g for s, g in zip(size, grid, strict=True)):
            return p
    return None


def find_grid(tokens: int, image_size: Sequence[int], max_prefix: int = MAX_PREFIX_TOKENS) -> tuple[int, int, int]:
    """The patch grid hidden in ``tokens`` tokens of an image of ``image_size`` (H, W).

    Searches the fewest extra tokens ``p`` (0 up to ``max_prefix``) such that
    ``tokens - p = h * w`` and one square patch size ``P`` tiles the image
    exactly, ``H = h P`` and ``W = w P``; only if none does, the same search
    allows a remainder, ``H // P == h`` and ``W // P == w`` (cropped edges),
    and then padding, ``ceil(H / P) == h`` and ``ceil(W / P) == w`` (Hugging
    Face Swin pads a 400x600 image to 13x19 patches of 32 in its last stage;
    padded patches are powers of two, the strides that halving makes).
    Exact tiling first keeps 1 class + 8 register tokens on a 32x32 image with
    8x8 patches (25 tokens) from being read as a 5x5 grid of 6-pixel patches.

    Args:
        tokens: the token count T of a ``(N, T, C)`` activation.
        image_size: the input's spatial size ``(H, W)``.
        max_prefix: the most extra tokens to try.

    Returns:
        ``(prefix, h, w)``: how many leading tokens to drop, and the grid.

    Raises:
        LayerShapeError: no grid fits; the message says how to pass ``reshape=``.
    """
    return _find_grid(int(tokens), tuple(int(s) for s in image_size), int(max_prefix))


@lru_cache(maxsize=256)
def _find_grid(tokens: int, image_size: tuple[int, ...], max_prefix: int) -> tuple[int, int, int]:
    """Cached search behind :func:`find_grid`."""
    if len(image_size) != 2:
        raise LayerShapeError(
            f"token layers need a 2-D image input to find their grid; the input has spatial size "
            f"{tuple(image_size)}; pass reshape=fn turning (N, T, C) into (N, C, *spatial)"
        )
    height, width = int(image_size[0]), int(image_size[1])
    for tiling in _TILINGS:
        for prefix in range(0, min(max_prefix, tokens - 1) + 1):
            g = tokens - prefix
            for h in range(1, g + 1):
                if g % h == 0 and _patch_for((height, width), (h, g // h), tiling) is not None:
                    return prefix, h, g // h
    raise LayerShapeError(
        f"cannot find a patch grid in {tokens} tokens for a {height}x{width} input "
        f"(tried 0..{max_prefix} leading class/register tokens); "
        "pass reshape=lambda t: ... turning (N, T, C) into (N, C, h, w)"
    )


def tokens_to_maps(t: Tensor, image_size: Sequence[int], prefix: int | None = None) -> Tensor:
    """Tokens ``(N, T, C)`` -> maps ``(N, C, h, w)``, dropping the leading extra tokens.

    Args:
        t: the layer output, ``(N, T, C)``; patch tokens last, row-major.
        image_size: the input's ``(H, W)``, used to find the grid.
        prefix: the number of leading extra tokens (class, registers,
            distillation) if known; found with :func:`find_grid` otherwise.

    Returns:
        A view-backed tensor ``(N, C, h, w)``: ``out[n, c, i, j] = t[n, prefix + i * w + j, c]``.

    Raises:
        LayerShapeError: ``t`` is not 3-D or no grid fits.

    Example:
        >>> import torch
        >>> t = torch.arange(2 * 17 * 3.0).view(2, 17, 3)   # class token + 4x4 patches
        >>> tokens_to_maps(t, (32, 32)).shape
        torch.Size([2, 3, 4, 4])
    """
    if t.ndim != 3:
        raise LayerShapeError(f"tokens_to_maps needs (N, T, C) tokens, got shape {tuple(t.shape)}")
    n, tokens, c = t.shape
    if prefix is None:
        prefix, h, w = find_grid(tokens, image_size)
    else:
        g = tokens - prefix
        found = find_grid(g, image_size, max_prefix=0) if g > 0 else None
        if found is None:
            raise LayerShapeError(f"prefix={prefix} leaves no patch tokens of {tokens}")
        _, h, w = found
    return t[:, prefix:].reshape(n, h, w, c).permute(0, 3, 1, 2)


def channels_last_to_maps(t: Tensor) -> Tensor:
    """Channels-last ``(N, *spatial, C)`` -> ``(N, C, *spatial)`` (Swin's ``(N, h, w, C)``)."""
    if t.ndim < 3:
        raise LayerShapeError(f"channels_last_to_maps needs (N, *spatial, C), got shape {tuple(t.shape)}")
    return t.movedim(-1, 1)


def _fits(image_size: Sequence[int], grid: Sequence[int]) -> bool:
    return _fits_cached(tuple(int(s) for s in image_size), tuple(int(g) for g in grid))


@lru_cache(maxsize=1024)
def _fits_cached(image_size: tuple[int, ...], grid: tuple[int, ...]) -> bool:
    """Cached :func:`_patch_for` test: it runs on every 4-D layer output of every call, a loop over patch sizes."""
    return any(_patch_for(image_size, grid, tiling) is not None for tiling in ("crop", "pad"))


def auto_reshape(t: Tensor, input_shape: Sequence[int]) -> Tensor:
    """A layer output as ``(N, C, *spatial)`` for an input of ``input_shape`` ``(N, C, *spatial)``.

    The rules, in order:

    1. the input is not an image (1-D signals, 3-D volumes): unchanged;
    2. ``(N, T, C)`` with ``C > 1``: tokens, see :func:`tokens_to_maps`
       (``(N, C, 1)`` is a 1-D pooled output, e.g. Hugging Face Swin's pooler);
    3. ``(N, a, b, c)`` where ``(a, b)`` is a patch grid of the image
       (``H // P == a``, ``W // P == b``) and ``(b, c)`` cannot be a feature
       map of it (larger than the image, or an aspect ratio more than
       :data:`ASPECT_SLACK` times off): channels-last (Swin), moved to
       ``(N, c, a, b)``;
    4. anything else: unchanged (channels-first; the engine reports a wrong rank).

    Channels-first wins when both readings are plausible, e.g. ``(N, 8, 8, 10)``
    for a square image: pass ``reshape=camlens.channels_last_to_maps`` there.
    Real Swin stages (``(N, 7, 7, 768)`` at 224) are unambiguous.
    """
    spatial = tuple(int(s) for s in input_shape[2:])
    if len(spatial) != 2:
        return t
    if t.ndim == 3 and t.shape[2] > 1:  # (N, C, 1) is a pooled output, not one-channel tokens
        return tokens_to_maps(t, spatial)
    if t.ndim == 4 and _fits(spatial, t.shape[1:3]) and not _could_be_maps(spatial, t.shape[2:]):
        return channels_last_to_maps(t)
    return t


#: how far (as a factor) a channels-first reading's aspect ratio may stray from the input's.
ASPECT_SLACK = 1.25


def _could_be_maps(image: Sequence[int], hw: Sequence[int]) -> bool:
    """Whether ``hw`` can be the spatial size of channels-first maps of ``image``.

    Not larger than the image, and an aspect ratio within :data:`ASPECT_SLACK`
    of the image's (valid convolutions lose a few border pixels, so an exact
    patch grid is not required).
    """
    (big_h, big_w), (h, w) = image, hw
    if h > big_h or w > big_w:
        return False
    r = (h / w) / (big_h / big_w)
    return max(r, 1 / r) <= ASPECT_SLACK


#: how many cells a side may lose to unpadded convolutions and pooling, on top of a fraction of the side.
BORDER_CELLS = 2
BORDER_FRACTION = 0.15


def plausible_grid(grid: Sequence[int], image: Sequence[int]) -> bool:
    """Whether ``grid`` (a map's spatial size) can be the image's spatial size shrunk by one common stride.

    Each side ``g`` of an image side ``S`` allows the strides ``s`` with
    ``g - 1 <= S / s <= g + BORDER_CELLS + BORDER_FRACTION * g`` (rounding up by
    padding, or losing border cells to unpadded convolutions); the grid is
    plausible when one stride of at least 1 fits every side (a map no larger
    than the image, give or take its border cells). A 7x7 map of a
    224x224 image is (stride 32), and so is 13x19 of 400x600 (32, padded); the
    50x40 "map" that a ``(N, heads, tokens, head_dim)`` attention tensor would
    read as for a 224x224 image is not.

    Example:
        >>> plausible_grid((7, 7), (224, 224)), plausible_grid((50, 40), (224, 224))
        (True, False)
    """
    if len(grid) != len(image):
        return False
    low, high = 1.0, float("inf")
    for g, size in zip(grid, image, strict=True):
        low = max(low, size / (g + BORDER_CELLS + BORDER_FRACTION * g))
        high = min(high, size / max(g - 1, 0.5))
    return low <= high
