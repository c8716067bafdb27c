"""The options every command that loads a model shares: its weights and the preprocessing flags.

A command adds them with :func:`add_model_arguments` next to its own ``model``
argument and builds the model with :func:`model_from_args`, which prints the
preprocessing used (so every run says how images were prepared).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from camlens.errors import ChannelError, InputError
from camlens.preprocess import INTERPOLATIONS, Preprocess

__all__ = ["add_model_arguments", "channels_as_flags", "model_from_args", "parse_floats", "parse_size"]


def parse_size(text: str, flag: str = "--size") -> int | tuple[int, int]:
    """``"224"`` -> 224; ``"224x320"`` or ``"224,320"`` -> (224, 320) (height, width)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a size: give N or HxW, e.g. 224 or 224x320") from None
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise InputError(f"{flag} {text!r} is not a size: give N or HxW with positive numbers, e.g. 224 or 224x320")
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> a tuple of floats (one value is used for every channel)."""
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a list of numbers: give e.g. 0.485,0.456,0.406") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights`` and the preprocessing flags (``--size``, ``--crop``, ``--mean``, ``--std``, ...)."""
    parser.add_argument("--weights", default=None, metavar="none|FILE",
                        help="the model's weights: 'none' for random weights (torchvision:, timm:, hf: models), or a "
                             ".safetensors / torch.save state-dict file; default: the model's own (zoo models: "
                             "pretrained, from the cache or downloaded)")  # fmt: skip
    parser.add_argument("--size", default=None, metavar="N|HxW",
                        help="resize: N sets the shorter side (aspect kept), HxW sets both; default: the model's own")
    parser.add_argument("--crop", default=None, metavar="N|HxW",
                        help="centre crop after the resize, N (square) or HxW; default: the model's own")
    parser.add_argument("--mean", default=None, metavar="M[,M,M]",
                        help="per-channel mean subtracted from values in [0, 1]; default: the model's own")
    parser.add_argument("--std", default=None, metavar="S[,S,S]",
                        help="per-channel std dividing the values after the mean; default: the model's own")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="channels the model takes: 1 (grayscale) or 3 (RGB); default: the model's own")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                        help="resize interpolation (antialiased when shrinking); default: the model's own")
    parser.add_argument("--fast-decode", action="store_true",
                        help="decode big JPEG files at a reduced scale (several times faster; values differ by "
                             "1-2 grey levels on average from a full decode)")  # fmt: skip


def preprocess_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The preprocessing flags given on the command line, parsed (``None`` where not given)."""
    size = getattr(args, "size", None)
    crop = getattr(args, "crop", None)
    mean = getattr(args, "mean", None)
    std = getattr(args, "std", None)
    return {
        "size": None if size is None else parse_size(str(size)),
        "crop": None if crop is None else parse_size(str(crop), "--crop"),
        "mean": None if mean is None else parse_floats(str(mean), "--mean"),
        "std": None if std is None else parse_floats(str(std), "--std"),
        "channels": getattr(args, "channels", None),
        "interpolation": getattr(args, "interpolation", None),
    }


def model_from_args(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, dict[str, Any], Preprocess]:
    """``(model, info, preprocess)`` for ``args.model`` with ``--weights`` and the preprocessing flags.

    Prints ``preprocess: <what is done to every image>``; ``info["preprocess"]``
    is replaced by the preprocessing used.
    """
    from camlens.sources import load_model, resolve_preprocess

    model, info = load_model(args.model, device, weights=getattr(args, "weights", None))
    pre = resolve_preprocess(info, **preprocess_flags(args))
    if getattr(args, "fast_decode", False):
        pre = pre.override(fast_decode=True)
    info = {**info, "preprocess": pre}
    print(f"preprocess: {pre.describe()}")
    return model, info, pre


def _channels(n: int) -> str:
    return {1: "1 channel (grayscale)", 3: "3 channels (RGB)"}.get(n, f"{n} channels")


@contextmanager
def channels_as_flags(args: argparse.Namespace, fixes: str) -> Iterator[None]:
    """Say a channel mismatch with what the command line offers, not in Python's words (``x.expand(...)``).

    Args:
        args: the command's arguments (its ``--channels``, if it has one).
        fixes: what fixes it when ``--channels`` did not make the images so, with ``{n}`` for the model's channels.

    Raises:
        ChannelError: the one the engine raised (:func:`camlens.core.inputs.check_image_batch`), reworded.
    """
    try:
        yield
    except ChannelError as e:
        head = f"the images reach {e.where} with {_channels(e.given)}, but it takes {_channels(e.expected)}"
        flag = getattr(args, "channels", None)
        if e.expected not in (1, 3):
            fix = f"give images with {e.expected} channels (the preprocessing makes 1 or 3)"
        elif flag is not None and flag == e.given:
            fix = (f"--channels {flag} converts the images to {_channels(flag)}: pass --channels {e.expected}, or "
                   "leave --channels out for the model's own preprocessing")  # fmt: skip
        else:
            fix = fixes.replace("{n}", str(e.expected))
        raise ChannelError(f"{head}: {fix}", e.given, e.expected, e.where) from None
