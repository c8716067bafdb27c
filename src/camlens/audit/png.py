"""Small PNG pictures without any imaging library: the explorer's thumbnails, overlays and class figures.

A PNG here is 8-bit greyscale or RGB, no interlacing, every row with filter
type 0, compressed with :mod:`zlib` (the format of RFC 2083); that is all a
browser needs, and it keeps the audit free of Pillow and matplotlib.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["blend", "draw_box", "encode_png", "jet", "to_uint8"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, level: int = 6) -> bytes:
    """The PNG file of ``pixels``: uint8 ``(H, W)`` (greyscale) or ``(H, W, 3)`` (RGB).

    Raises:
        ValueError: another dtype or shape.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"encode_png takes uint8 (H, W) or (H, W, 3), not {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, level))
        + _chunk(b"IEND", b"")
    )


def jet(values: Tensor) -> Tensor:
    """The 'jet' colour scale: values in [0, 1] ``(...)`` -> RGB in [0, 1] ``(..., 3)`` (blue, cyan, yellow, red)."""
    v = values.clamp(0, 1)[..., None]
    centres = torch.tensor([0.75, 0.5, 0.25], dtype=v.dtype, device=v.device)
    return (1.5 - (4 * v - 4 * centres).abs()).clamp(0, 1)


def blend(image: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """Images ``(N, 3, H, W)`` in [0, 1] under maps ``(N, H, W)`` in [0, 1] coloured by :func:`jet`: ``(N, 3, H, W)``"""
    return (1 - alpha) * image + alpha * jet(heat).permute(0, 3, 1, 2)


def draw_box(rgb: Tensor, box: tuple[int, int, int, int], colour: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    """Draw the outline of ``box = (x0, y0, x1, y1)`` (end exclusive) into ``rgb (3, H, W)`` in place."""
    x0, y0, x1, y1 = box
    c = torch.tensor(colour, dtype=rgb.dtype)[:, None]
    rgb[:, y0, x0:x1] = c
    rgb[:, y1 - 1, x0:x1] = c
    rgb[:, y0:y1, x0] = c
    rgb[:, y0:y1, x1 - 1] = c


def to_uint8(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in [0, 1] (C = 1 or 3) -> uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` for :func:`encode_png`."""
    a = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return a[:, 0].numpy() if a.shape[1] == 1 else a.permute(0, 2, 3, 1).contiguous().numpy()
