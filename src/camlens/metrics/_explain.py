"""Shared pieces of the metrics that call an explainer: signed maps in chunks, noisy inputs, argument checks."""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.errors import InputError
from camlens.methods import get_method
from camlens.metrics.sanity import image_map, randomized_models

__all__ = [
    "Explain",
    "check_count",
    "check_images",
    "check_scale",
    "fully_randomized",
    "layer_name",
    "method_maps",
    "noise_draws",
    "noisy_maps",
]

#: ``explain(x, classes)``: ``(M, C, H, W)`` images and ``(M,)`` classes -> ``(M, H, W)`` maps.
Explain = Callable[[Tensor, Tensor], Tensor]


def check_images(x: object) -> None:
    """Raise :class:`InputError` unless ``x`` is a floating ``(N, C, H, W)`` tensor."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x must be a floating image batch of shape (N, C, H, W), got {shape}")


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``, or an :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}={value!r} must be an integer >= {minimum}; pass e.g. {name}={max(minimum, 10)}")
    return value


def check_scale(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite float ``>= 0`` (``> 0`` if ``positive``), or an :class:`InputError` naming ``name``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        bound = "> 0" if positive else ">= 0"
        raise InputError(f"{name}={value!r} must be a finite number {bound}; pass e.g. {name}=0.1")
    return float(value)  # type: ignore[arg-type]


def layer_name(model: nn.Module, layer: LayerSpec) -> LayerSpec:
    """A module given as ``layer`` by its name in ``model`` (so that it can be found in a deep copy)."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name
        raise InputError(f"layer {type(layer).__name__} is not a module of {type(model).__name__}; pass its name")
    return layer


def method_maps(method: str, model: nn.Module, layer: LayerSpec, batch_size: int) -> Explain:
    """An ``explain(x, classes)`` with ``method`` on ``model``: signed, unnormalized ``(M, H, W)`` maps.

    The maps are taken with ``relu=False, normalize=False`` (signed, upsampled to the input) where the
    method has these switches, as in :func:`camlens.metrics.sanity_check`; an input-sized map
    ``(M, C, H, W)`` is averaged over its channels (:func:`camlens.metrics.sanity.image_map`).
    """
    try:
        cls = get_method(method)
    except KeyError as err:
        raise InputError(f"method={method!r}: {err.args[0]}") from None
    explainer = cls(model, layer, relu=False, normalize=False) if cls.accepts_postprocess else cls(model, layer)

    def explain(x: Tensor, classes: Tensor) -> Tensor:
        chunks = zip(x.split(batch_size), classes.split(batch_size), strict=True)
        return torch.cat([image_map(explainer(xc, cc).map.detach()) for xc, cc in chunks])

    return explain


def fully_randomized(model: nn.Module, order: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` with every layer of ``order`` re-initialized (the last cascading step)."""
    tail = deque(randomized_models(model, order, "cascading", seed), maxlen=1)  # the copy changes in place
    return tail[0][1] if tail else copy.deepcopy(model)


def noise_draws(x: Tensor, seed: int, kind: str, samples: int) -> Callable[[int], Tensor]:
    """``draw(s)``: the ``s``-th standard draw of the shape of ``x``, called for ``s = 0, 1, ...`` in order.

    Each draw is one ``torch.randn`` (``kind="normal"``) or ``torch.rand`` (``kind="uniform"``, on
    ``[0, 1)``) call of shape ``x.shape`` in ``x``'s dtype from ``torch.Generator().manual_seed(seed)``
    on the CPU, moved to ``x``'s device: the same seed gives the same draws on any device and for any
    ``batch_size``. A new ``noise_draws`` restarts the sequence.
    """
    gen = torch.Generator().manual_seed(int(seed))
    fill = torch.randn if kind == "normal" else torch.rand
    expected = iter(range(samples))

    def draw(s: int) -> Tensor:
        if next(expected, None) != s:
            raise RuntimeError(f"noise draw {s} requested out of order")  # a bug in camlens, not user input
        return fill(x.shape, generator=gen, dtype=x.dtype).to(x.device)

    return draw


def noisy_maps(
    explain: Explain, x: Tensor, classes: Tensor, perturb: Callable[[int], Tensor], samples: int, batch_size: int
) -> Iterator[Tensor]:
    """Yield ``explain(perturb(s), classes)`` ``(N, H, W)`` for ``s = 0 .. samples - 1``, in order.

    Several samples share one explainer call of about ``batch_size`` images when the batch is
    smaller than ``batch_size``; the maps do not depend on it.
    """
    n = x.shape[0]
    per_call = max(1, batch_size // n)
    for s0 in range(0, samples, per_call):
        k = min(per_call, samples - s0)
        xs = torch.cat([perturb(s) for s in range(s0, s0 + k)])
        maps = explain(xs, classes.repeat(k))
        yield from maps.view(k, n, *maps.shape[1:]).unbind(0)
