"""Load PNG/JPEG files as model input: grayscale, square, resized to the model's size."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from camlens._util.optional import optional_import
from camlens.errors import DataError

__all__ = ["load_image", "load_images"]


def load_image(path: str | Path, size: int = 28, invert: bool = False) -> Tensor:
    """One image file as a float tensor ``(1, size, size)`` in [0, 1] (grayscale).

    The image must be square and at least ``size`` pixels wide; larger ones are
    resized down (antialiased). Fashion-MNIST items are light on a dark
    background: pass ``invert=True`` for a dark item photographed on white.

    Args:
        path: a PNG or JPEG file (any format Pillow reads).
        size: the side length the model expects (28 for Fashion-MNIST).
        invert: use ``1 - pixel``.

    Raises:
        DataError: a missing, corrupt or non-image file, or a wrong size; the
            message names the file and what to do.
    """
    Image = optional_import("PIL.Image", "plot", "PNG/JPEG files")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            gray = im.convert("L")
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image file {path} is corrupt or not an image Pillow can read ({e}); "
                        "give a PNG or JPEG file") from None
    w, h = gray.size
    if w != h:
        raise DataError(f"image file {path} is {w}x{h}; expected a square image (crop it to {min(w, h)}x{min(w, h)} "
                        f"around the item), which is then resized to {size}x{size}")
    if w < size:
        raise DataError(f"image file {path} is {w}x{h}, smaller than the model's {size}x{size}; "
                        f"give an image of at least {size}x{size} pixels")
    if w != size:
        gray = gray.resize((size, size), Image.Resampling.LANCZOS)
    x = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).view(1, size, size).float().div_(255.0)
    return 1.0 - x if invert else x


def load_images(paths: list[str | Path], size: int = 28, invert: bool = False) -> Tensor:
    """Several files as one batch ``(N, 1, size, size)``; see :func:`load_image`."""
    return torch.stack([load_image(p, size, invert) for p in paths])
