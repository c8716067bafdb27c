"""A self-contained HTML report: training curve, per-class accuracy, figures (PNG embedded as base64)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["curve_figure", "per_class_figure", "write_report"]


def curve_figure(history: Sequence[Mapping[str, Any]]) -> Any:
    """Training and validation loss, and validation accuracy, per epoch (a matplotlib Figure)."""
    from camlens.viz.figures import _mpl

    _, Figure = _mpl()
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3), layout="tight")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy")
    for ax in (ax1, ax2):
        ax.set_xticks(epochs)
    return fig


def per_class_figure(per_class: Sequence[float], class_names: Sequence[str]) -> Any:
    """Horizontal bars of per-class accuracy (a matplotlib Figure)."""
    from camlens.viz.figures import _mpl

    _, Figure = _mpl()
    fig = Figure(figsize=(6, 3.2), layout="tight")
    ax = fig.subplots()
    ax.barh(list(class_names)[::-1], list(per_class)[::-1], color="C0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    for y, v in enumerate(list(per_class)[::-1]):
        ax.text(min(v + 0.01, 0.9), y, f"{v:.2f}", va="center", fontsize=8)
    return fig


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    per_class: Sequence[float],
    class_names: Sequence[str],
    figures: Sequence[tuple[str, bytes]],
    sections: Sequence[str] = (),
) -> Path:
    """Write one HTML file that needs nothing else (images inline), atomically.

    Args:
        path: the ``.html`` file.
        title: page title.
        summary: lines of text shown at the top.
        history: per-epoch dicts with ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``.
        per_class: accuracy per class, aligned with ``class_names``.
        figures: ``(caption, png bytes)`` pairs, shown in order.
        sections: trusted HTML fragments appended after the figures (e.g. :meth:`camlens.evaluation.run.Evaluation.html`).

    Returns:
        The path.
    """
    from camlens._util.files import atomic_write_bytes
    from camlens.viz.figures import figure_bytes

    rows = "".join(
        f"<tr><td>{h['epoch']}</td><td>{h['train_loss']:.4f}</td><td>{h['val_loss']:.4f}</td>"
        f"<td>{h['val_accuracy']:.4f}</td></tr>"
        for h in history
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:.3em 0}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}figure{margin:1.5em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>",
        "<h2>Training</h2>",
        "<table><tr><th>epoch</th><th>train loss</th><th>val loss</th><th>val accuracy</th></tr>" + rows + "</table>",
        _img(figure_bytes(curve_figure(history)), "training curve"),
        "<h2>Per-class test accuracy</h2>",
        _img(figure_bytes(per_class_figure(per_class, class_names)), "per-class accuracy"),
        "<h2>Where the model looks (Grad-CAM)</h2>",
    ]
    for caption, png in figures:
        parts.append(f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.extend(sections)
    parts.append("</body></html>\n")
    path = Path(path)
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path
