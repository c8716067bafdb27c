"""A self-contained HTML report: training curve, per-class accuracy, figures (PNG embedded as base64)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from camlens.viz.html import Node

__all__ = ["curve_figure", "per_class_figure", "write_report"]


def curve_figure(history: Sequence[Mapping[str, Any]]) -> Any:
    """Training and validation loss, and validation accuracy, per epoch (a matplotlib Figure)."""
    from camlens.viz.figures import new_figure

    epochs = [h["epoch"] for h in history]
    fig = new_figure((8, 3))
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
    from camlens.viz.figures import new_figure

    fig = new_figure((6, 3.2))
    ax = fig.subplots()
    ax.barh(list(class_names)[::-1], list(per_class)[::-1], color="C0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    for y, v in enumerate(list(per_class)[::-1]):
        ax.text(min(v + 0.01, 0.9), y, f"{v:.2f}", va="center", fontsize=8)
    return fig


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    per_class: Sequence[float],
    class_names: Sequence[str],
    figures: Sequence[tuple[str, bytes]],
    sections: Sequence[Node] = (),
) -> Path:
    """Write one HTML file that needs nothing else (images inline), atomically, through :mod:`camlens.viz.html`.

    Args:
        path: the ``.html`` file.
        title: page title.
        summary: lines of text shown at the top.
        history: per-epoch dicts with ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``.
        per_class: accuracy per class, aligned with ``class_names``.
        figures: ``(caption, png bytes)`` pairs, shown in order.
        sections: appended after the figures: elements of :mod:`camlens.viz.html`, or HTML it rendered
            (a :class:`~camlens.viz.html.Markup`, e.g. :meth:`camlens.evaluation.Evaluation.html`);
            a plain string is shown as text.

    Returns:
        The path.
    """
    from camlens._util.files import atomic_write_text
    from camlens.evaluation.render import PAGE_STYLE
    from camlens.viz import html as h
    from camlens.viz.figures import figure_bytes

    rows = [[str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['val_loss']:.4f}", f"{r['val_accuracy']:.4f}"]
            for r in history]
    text = h.page(
        title,
        h.bullets(summary),
        h.section("Training", h.table(["epoch", "train loss", "val loss", "val accuracy"], rows),
                  h.image(figure_bytes(curve_figure(history)), "training curve")),
        h.section("Per-class test accuracy",
                  h.image(figure_bytes(per_class_figure(per_class, class_names)), "per-class accuracy")),
        h.section("Where the model looks (Grad-CAM)", *(h.figure(png, caption) for caption, png in figures)),
        *sections,
        style=PAGE_STYLE,  # the evaluation page's stylesheet: the verdict at the head of the evaluation section
    )
    path = Path(path)
    atomic_write_text(path, text)
    return path
