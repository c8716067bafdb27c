"""``audit.json`` and the per-class figures: the audit's findings, in the issue's shape, with their evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from camlens._util.files import atomic_write_bytes, atomic_write_text
from camlens.audit.png import blend, draw_box, encode_png, to_uint8
from camlens.core.ops import minmax_normalize, upsample

__all__ = ["AUDIT_JSON", "CLASSES", "class_figure", "dumps", "write_json"]

AUDIT_JSON = "audit.json"
#: the folder of the per-class figures, beside audit.json.
CLASSES = "classes"
#: the per-class figures' side in pixels (small images are scaled up, pixels kept square).
FIGURE = 168


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``null``, recursively."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON (``null`` for NaN), with ``<``, ``>``, ``&`` and the JS line separators escaped, so
    that the text is also safe inside a ``<script>`` element."""
    try:  # most values hold no NaN: no need to copy them (a tuple is written as a list either way)
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), indent=indent, ensure_ascii=False, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def write_json(out: Path, report: dict[str, Any]) -> Path:
    """Write ``out/audit.json`` (through a temporary file)."""
    path = out / AUDIT_JSON
    atomic_write_text(path, dumps(report, indent=2) + "\n")
    return path


def class_figure(out: Path, name: str, background: Tensor | None, mean_map: Tensor,
                 box: list[int] | None, input_size: tuple[int, int] | None) -> str:  # fmt: skip
    """Write one figure: ``mean_map (h, w)`` over the class's mean image ``(3, H, W)`` (or black), the
    flagged ``box`` ``[x0, y0, x1, y1]`` in input pixels outlined in white. Returns its path relative to ``out``."""
    size = tuple(background.shape[-2:]) if background is not None else tuple(mean_map.shape[-2:])
    scale = max(1, FIGURE // max(size))
    big = (size[0] * scale, size[1] * scale)
    bg = torch.zeros((1, 3, *size)) if background is None else background[None].float()
    bg = F.interpolate(bg, size=big, mode="nearest")
    heat = minmax_normalize(upsample(mean_map[None, None].float(), big))[:, 0]
    rgb = blend(bg, heat)[0]
    if box is not None:
        ih, iw = input_size or tuple(mean_map.shape[-2:])
        sy, sx = big[0] / ih, big[1] / iw
        x0, y0 = int(box[0] * sx), int(box[1] * sy)
        x1, y1 = min(max(round(box[2] * sx), x0 + 1), big[1]), min(max(round(box[3] * sy), y0 + 1), big[0])
        draw_box(rgb, (x0, y0, x1, y1))
    rel = f"{CLASSES}/{name}.png"
    atomic_write_bytes(out / rel, encode_png(to_uint8(rgb[None])[0]))
    return rel
