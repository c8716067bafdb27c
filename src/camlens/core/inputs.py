"""Is ``x`` a batch the model takes? Integer pixels, another dtype, no batch dimension, grayscale or channels-last.

The engine's input check (:func:`camlens.methods.base.check_input`) calls
:func:`check_image_batch` before anything runs. The model's first
convolution (in definition order) says what it takes: ``(N, C, *spatial)``
floating-point images with ``C`` its ``in_channels``. Where ``x`` does not
fit that, the suspicion is confirmed before anything is refused: a forward
pass of the first image, without autograd, stops at the first convolution
that is called and looks at what it receives. A model that converts its input
itself (repeats a gray channel, scales uint8, adds the batch dimension) hands
that convolution what it takes, and ``x`` passes; otherwise the error names
the value and the fix. A model without convolutions is not checked here.
"""

from __future__ import annotations

from threading import get_ident
from typing import Any

import torch
from torch import Tensor, nn

from camlens.errors import ChannelError, InputError

__all__ = ["check_image_batch", "first_convolution"]


def first_convolution(model: nn.Module) -> tuple[str, nn.modules.conv._ConvNd] | None:
    """The first convolution of ``model`` in definition order, with its name (``None``: it has none)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name, m
    return None


def check_image_batch(model: nn.Module, x: Tensor) -> None:
    """Refuse an ``x`` that the model's first convolution cannot take, saying what to do instead.

    Raises:
        InputError: ``x`` holds integers (uint8 pixels), lacks the batch
            dimension, has a channel count the model does not take (grayscale
            into an RGB model, RGB into a grayscale one, RGBA), has another
            floating dtype than the model's weights (outside autocast), or is
            channels-last ``(N, H, W, C)``; each message names the shape or
            dtype and the conversion that fixes it. A channel count the model
            does not take is a :class:`~camlens.errors.ChannelError` (an
            ``InputError``) that also holds both counts.
    """
    found = first_convolution(model)
    if found is None or x.numel() == 0:
        return
    name, conv = found
    problem = _diagnose(type(model).__name__, name, conv, x)
    probe = x[:1] if x.ndim == len(conv.kernel_size) + 2 else x  # the first image (all of an unbatched x)
    if problem is not None and not _model_adapts(model, probe):
        raise problem


def _takes(conv: nn.modules.conv._ConvNd, t: Tensor) -> bool:
    """Whether ``conv`` takes ``t`` as a batch: ``(N, in_channels, *spatial)``, floating point."""
    rank = len(conv.kernel_size)
    floating = t.is_floating_point() or t.is_complex()
    return t.ndim == rank + 2 and t.shape[1] == conv.in_channels and floating and _dtype_fits(conv, t)


def _dtype_fits(conv: nn.modules.conv._ConvNd, t: Tensor) -> bool:
    """Whether ``conv`` computes in ``t``'s dtype (under autocast it casts both itself)."""
    return t.dtype == conv.weight.dtype or torch.is_autocast_enabled(t.device.type)


def _diagnose(model_name: str, name: str, conv: nn.modules.conv._ConvNd, x: Tensor) -> InputError | None:
    """What is wrong with ``x`` for a model whose first convolution is ``conv`` (``None``: nothing seen)."""
    if _takes(conv, x):
        return None
    rank, c_in, shape = len(conv.kernel_size), conv.in_channels, tuple(x.shape)
    spatial = {1: "L", 2: "H, W", 3: "D, H, W"}.get(rank, "...")
    where = f"{model_name}'s first convolution {name!r}"
    takes = f"{where} takes (N, {c_in}, {spatial})"
    if not (x.is_floating_point() or x.is_complex()):
        scale = " / 255" if x.dtype == torch.uint8 else ""
        return InputError(
            f"x has dtype {x.dtype} (integer pixel values{', 0..255' if scale else ''}), but {takes} in floating "
            f"point; convert it with x.float(){scale} and normalize it as the model expects (its mean and std)"
        )
    if x.ndim == rank + 2 and shape[1] == c_in:  # the shape fits: only the dtype does not
        weights = conv.weight.dtype
        return InputError(
            f"x has dtype {x.dtype}, but {takes} with {weights} weights; convert the input, "
            f"x.to({weights}), or the model, model.to({x.dtype}), so that both have one dtype"
        )
    if x.ndim == rank + 1:
        return InputError(
            f"x has shape {shape}: no batch dimension; {takes}: pass x.unsqueeze(0), a batch of one image"
        )
    if x.ndim != rank + 2:
        return InputError(f"x has shape {shape} ({x.ndim} dimensions), but {takes}")
    c = shape[1]
    if rank == 2 and shape[-1] == c_in:
        return InputError(
            f"x has shape {shape}, channels last (N, H, W, C); {takes}, channels first: pass x.permute(0, 3, 1, 2)"
        )
    return ChannelError(_channel_problem(shape, takes, c_in), c, c_in, where)


def _channel_problem(shape: tuple[int, ...], takes: str, c_in: int) -> str:
    """The message for an ``x`` of ``shape`` whose channel count ``shape[1]`` is not the ``c_in`` the model takes."""
    c = shape[1]
    if c == 1 and c_in == 3:
        return (
            f"x has 1 channel (shape {shape}, a grayscale image), but {takes}, RGB: repeat the channel, "
            "x.expand(-1, 3, *x.shape[2:]), or open the image as RGB (PIL: image.convert('RGB'))"
        )
    if c == 3 and c_in == 1:
        return (
            f"x has 3 channels (shape {shape}, an RGB image), but {takes}, grayscale: "
            "pass x.mean(dim=1, keepdim=True), or open the image as grayscale (PIL: image.convert('L'))"
        )
    if c == 4 and c_in == 3:
        return f"x has 4 channels (shape {shape}, RGBA?), but {takes}: drop the alpha channel, x[:, :3]"
    return f"x has {c} channels (shape {shape}), but {takes}; give it images with {c_in} channel(s)"


class _Reached(Exception):
    """Raised by the probe at the first convolution called; ``ok`` says whether it took its input."""

    def __init__(self, ok: bool) -> None:
        super().__init__(ok)
        self.ok = ok


def _model_adapts(model: nn.Module, probe: Tensor) -> bool:
    """Whether the first convolution ``model`` calls on ``probe`` gets what it takes.

    The forward pass stops there (nothing after it runs), without autograd;
    the pre-hooks act only in this thread and are removed before returning.
    A forward pass that fails before any convolution counts as not taken.
    """
    owner = get_ident()

    def hook(module: nn.Module, args: Any) -> None:
        if get_ident() == owner and isinstance(module, nn.modules.conv._ConvNd):
            first = args[0] if args else None
            raise _Reached(isinstance(first, Tensor) and _takes(module, first))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            model(probe)
    except _Reached as reached:
        return reached.ok
    except Exception:
        return False
    finally:
        for h in handles:
            h.remove()
    return True  # no convolution was called: nothing to judge by
