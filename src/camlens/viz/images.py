"""Load PNG/JPEG files as model input: grayscale, square, resized to the model's size.

Every image file camlens reads goes through :func:`open_image`: a regular file,
Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) turned into a
:class:`~camlens.errors.DataError`, and every mode converted without clipping
(16-bit data is scaled by 65535, not clipped to white at 255).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from camlens._util.optional import optional_import
from camlens.errors import DataError

__all__ = ["image_file", "image_tensor", "load_image", "load_images", "open_image"]

#: modes holding more than 8 bits per pixel (16-bit PNG/TIFF open as one of these); read as 0..65535.
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def _pil() -> Any:
    return optional_import("PIL.Image", "plot", "PNG/JPEG files")


def image_file(path: str | Path, kinds: str = "a PNG or JPEG file") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it names a regular file; every image reader checks here first.

    Raises:
        DataError: it does not exist, or is not a regular file (``kinds`` says what to give instead).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"image file {path} does not exist")
    if not path.is_file():
        raise DataError(f"image file {path} is not a regular file; give {kinds}")
    return path


@contextmanager
def reading_image(path: Path, give: str) -> Iterator[None]:
    """Run a Pillow read of ``path`` with its errors as a :class:`DataError` naming the file.

    A decompression-bomb warning is raised as an error; a corrupt or unreadable
    file ends with ``give`` (what to pass instead, e.g. "a PNG or JPEG file").
    """
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(
            f"image file {path} is too large for Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} "
            f"pixels ({e}); shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"image file {path} is corrupt or not an image Pillow can read ({e}); give {give}") from None


def open_image(path: str | Path, mode: str = "L") -> Any:
    """The image in ``path``, decoded and converted to ``mode``; a 16-bit image becomes mode ``"F"``.

    8-bit data is converted by Pillow (``"L"`` is ITU-R 601 luma, palettes and
    CMYK are expanded, alpha is dropped). 16-bit data (modes in
    :data:`WIDE_MODES`) becomes one float channel ``"F"`` on the same 0..255
    scale (``value / 65535 * 255``), so nothing is clipped; :func:`image_tensor`
    makes either a tensor.

    Raises:
        DataError: the file is missing, not a regular file, corrupt, larger than
            ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb), or of a mode
            that cannot become ``mode``; the message names the file.
    """
    Image = _pil()
    path = image_file(path)
    with reading_image(path, "a PNG or JPEG file"), Image.open(path) as im:
        im.load()
        if im.mode in WIDE_MODES:
            wide = np.asarray(im).astype(np.float32)
            return Image.fromarray(np.clip(wide, 0.0, 65535.0) * np.float32(255.0 / 65535.0), "F")
        return im.convert(mode)


def image_tensor(im: Any, channels: int | None = None) -> Tensor:
    """A Pillow image from :func:`open_image` as a float tensor ``(C, H, W)`` in [0, 1].

    Args:
        im: an 8-bit image, or a mode ``"F"`` one on the 0..255 scale.
        channels: repeat a one-channel image to this many channels (3 for an
            RGB model given a 16-bit grayscale file).
    """
    arr = np.asarray(im)
    if arr.dtype == np.uint8 or arr.dtype == np.bool_:
        t = torch.from_numpy(arr.astype(np.uint8, copy=True)).float()
        if arr.dtype == np.bool_:
            t.mul_(255.0)
    else:
        t = torch.from_numpy(np.clip(arr.astype(np.float32), 0.0, 255.0))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    if channels is not None and t.shape[0] == 1 and channels != 1:
        t = t.expand(channels, -1, -1)
    return t.div(255.0).contiguous()


def load_image(path: str | Path, size: int = 28, invert: bool = False) -> Tensor:
    """One image file as a float tensor ``(1, size, size)`` in [0, 1] (grayscale).

    The image must be square and at least ``size`` pixels wide; larger ones are
    resized down (antialiased). Fashion-MNIST items are light on a dark
    background: pass ``invert=True`` for a dark item photographed on white.
    Any mode Pillow reads is accepted; 16-bit files keep their full range.

    Args:
        path: a PNG or JPEG file (any format Pillow reads).
        size: the side length the model expects (28 for Fashion-MNIST).
        invert: use ``1 - pixel``.

    Raises:
        DataError: a missing, corrupt, oversized (decompression bomb) or
            non-image file, or a wrong size; the message names the file and what to do.
    """
    gray = open_image(path, "L")
    w, h = gray.size
    if w != h:
        raise DataError(f"image file {path} is {w}x{h}; expected a square image (crop it to {min(w, h)}x{min(w, h)} "
                        f"around the item), which is then resized to {size}x{size}")
    if w < size:
        raise DataError(f"image file {path} is {w}x{h}, smaller than the model's {size}x{size}; "
                        f"give an image of at least {size}x{size} pixels")
    if w != size:
        gray = gray.resize((size, size), _pil().Resampling.LANCZOS)
    x = image_tensor(gray)
    return 1.0 - x if invert else x


def load_images(paths: list[str | Path], size: int = 28, invert: bool = False) -> Tensor:
    """Several files as one batch ``(N, 1, size, size)``; see :func:`load_image`."""
    return torch.stack([load_image(p, size, invert) for p in paths])
