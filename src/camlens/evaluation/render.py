"""An :class:`~camlens.evaluation.result.Evaluation` as a text table, JSON, figures and HTML.

Figures are built with matplotlib's ``Figure`` API (:func:`camlens.viz.figures.new_figure`):
no pyplot, no backend switch, no global state. HTML goes through the one
renderer, :mod:`camlens.viz.html`, which escapes every value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camlens._util.files import atomic_write_bytes
from camlens.evaluation.result import COMPARED, METRICS, SANITY_STATS, Evaluation
from camlens.metrics import BASELINES, EXTRA_METRICS, OPT_IN_METRICS
from camlens.viz import html as h

__all__ = [
    "curves_figure",
    "html_page",
    "html_section",
    "png",
    "render_figures",
    "sanity_figure",
    "save_figures",
    "text_table",
    "verdict_block",
    "write_json",
]

#: the metrics of the main table (the ROAD parts are in the comparison).
SHOWN = ("deletion", "insertion", "road", "average_drop", "increase", "pointing")

WHAT_IT_SHOWS = (
    "What this shows: whether removing what a map highlights changes the model's output "
    "(deletion, insertion, ROAD), and whether the map changes when the model's weights are destroyed "
    "(sanity checks). What it does not show: that the map matches human reasoning, or that the "
    "model is right."
)


def _interval(r: dict[str, Any], fmt: str = ".3f") -> str:
    return f"{r['mean']:{fmt}} [{r['low']:{fmt}}, {r['high']:{fmt}}]"


def _difference(r: dict[str, Any]) -> str:
    return f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] {r['verdict']}"


#: the standalone page's stylesheet, on top of :data:`camlens.viz.html.STYLE` (a constant; nothing is interpolated).
PAGE_STYLE = h.STYLE + (
    "body{max-width:1200px;padding:0 1em;line-height:1.45}h1{font-size:1.6em;border-bottom:2px solid #335}"
    "h2{color:#335;margin-top:1.6em}h3{color:#446}"
    "table{font-size:.88em;font-variant-numeric:tabular-nums}th{background:#eef0f6;text-align:center}"
    "tr:nth-child(even) td{background:#f8f8fb}"
    ".verdict{border-left:6px solid #2a7;background:#effaf3;padding:.6em 1em;margin:1em 0}"
    ".verdict.none{border-left-color:#c63;background:#fdf3ee}.verdict p{margin:.3em 0}"
    ".verdict ol{margin:.3em 0 .3em 1.2em;padding:0}.scored{color:#555;font-size:.9em}"
    "figcaption{color:#555;font-size:.9em}"
)


def _shown(ev: Evaluation) -> list[str]:
    return [m for m in SHOWN if m in ev.metrics]


def _summary_rows(ev: Evaluation) -> list[list[str]]:
    summary = {(r["entry"], r["metric"]): r for r in ev.summary()}
    return [[e, *(_interval(summary[(e, m)]) for m in _shown(ev))] for e in ev.entries]


def _comparison_rows(ev: Evaluation) -> list[list[str]]:
    comp = {(r["entry"], r["metric"]): r for r in ev.comparisons("random")}
    return [[e, *(_difference(comp[(e, m)]) for m in COMPARED)] for e in ev.entries if e != "random"]


def _extra_table(ev: Evaluation, up: str, down: str) -> tuple[str, list[str], list[list[str]]]:
    """The opt-in metrics: a note, the header (``up``/``down`` mark the direction) and one row per entry."""
    from camlens.evaluation.extra import extra_label

    summary = {(r["entry"], r["metric"]): r for r in ev.extra_summary()}
    names = [n for n in OPT_IN_METRICS if any((e, n) in summary for e in ev.extra)]
    head = ["entry"] + [f"{extra_label(n)[0]} {up if extra_label(n)[1] else down}" for n in names]
    rows = [[e, *(_interval(summary[(e, n)]) if (e, n) in summary else "-" for n in names)] for e in ev.extra]
    calls = [n for n in names if n in EXTRA_METRICS]
    note = f"Opt-in metrics (not weighed by the verdict) on {ev.n_images} images"
    note += f" ({', '.join(calls)}: the first {ev.config.get('extra_images')})" if calls else ""
    note += "; mean [95% bootstrap interval]"
    note += "".join(f"; {name} left out for {e}: {why}" for e, name, why in ev.config.get("extra_skipped", []))
    return note, head, rows


def format_rows(head: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def text_table(ev: Evaluation) -> str:
    """The plain-text report: metrics per entry, differences against the random map, sanity checks."""
    head = ["entry"] + [METRICS[m][0] + (" ^" if METRICS[m][1] else " v") for m in _shown(ev)]
    first = (f"{ev.n_images} images x {len(ev.config['seeds'])} seed(s); "
             "mean [95% bootstrap interval]; ^ higher is better, v lower is better")
    out = [first]
    out.append(format_rows(head, _summary_rows(ev)))
    if "random" in ev.values:
        out.append("\nDifference to the random map (paired per image): mean [95% interval] verdict")
        out.append(format_rows(["entry", *COMPARED], _comparison_rows(ev)))
    if ev.sanity:
        out.append("\nSanity checks (Adebayo 2018): similarity to the original maps after randomizing, top first")
        rows = [
            [r["entry"], r["mode"], f"{r['step'] + 1}: {r['randomized']}"]
            + [_interval(r[s], "+.3f") for s in SANITY_STATS]
            for r in ev.sanity_summary()
        ]
        out.append(format_rows(["entry", "mode", "randomized", "Spearman", "Spearman |.|", "SSIM"], rows))
    if ev.extra:
        note, head, rows = _extra_table(ev, "^", "v")
        out += ["\n" + note, format_rows(head, rows)]
    out.append("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ev.timings.items()))
    out.append("\n" + ev.verdict().text())
    return "\n".join(out)


def write_json(ev: Evaluation, path: str | Path) -> Path:
    """Write :meth:`Evaluation.to_dict` to ``path`` as indented JSON (temporary file + rename)."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(ev.to_dict(), indent=2) + "\n").encode())
    return path


def png(fig: Any) -> bytes:
    """A figure as PNG bytes at 90 dpi."""
    from camlens.viz.figures import figure_bytes

    return figure_bytes(fig, "png", dpi=90)


def curves_figure(ev: Evaluation) -> Any:
    """The mean deletion, insertion and ROAD curves of every entry (a matplotlib ``Figure``)."""
    from camlens.viz.figures import new_figure

    fig = new_figure((15, 4.2))
    axes = fig.subplots(1, 3)
    x = ev.fractions.tolist()
    q = ev.percentages.tolist()
    for e in ev.entries:
        style = {"linestyle": "--" if e in BASELINES else "-", "linewidth": 1.2}
        axes[0].plot(x, ev.curves[e]["deletion"].tolist(), label=e, **style)
        axes[1].plot(x, ev.curves[e]["insertion"].tolist(), label=e, **style)
        (line,) = axes[2].plot(q, ev.curves[e]["road_morf"].tolist(), label=f"{e} MoRF", **style)
        axes[2].plot(q, ev.curves[e]["road_lerf"].tolist(), color=line.get_color(), linestyle=":", linewidth=1.2)
    for ax, title, xl in zip(
        axes,
        ("Deletion (lower is better)", "Insertion (higher is better)", "ROAD: MoRF solid/dashed, LeRF dotted"),
        ("fraction of pixels removed", "fraction of pixels inserted", "fraction of pixels imputed"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel("probability of the explained class")
        ax.set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="lower right")
    return fig


def sanity_figure(ev: Evaluation) -> Any:
    """The sanity-check similarities per randomization step (rows: modes; columns: statistics)."""
    from camlens.viz.figures import new_figure

    modes = sorted({m for v in ev.sanity.values() for m in v})
    fig = new_figure((15, 3.8 * len(modes)))
    axes = fig.subplots(len(modes), 3, squeeze=False)
    for row, mode in enumerate(modes):
        for col, stat in enumerate(SANITY_STATS):
            ax = axes[row][col]
            for e, res in ev.sanity.items():
                if mode not in res:
                    continue
                names = res[mode]["layers"]
                y = res[mode][stat].double().mean(dim=(0, 2)).tolist()
                ax.plot(range(len(names)), y, marker="o", label=e)
                ax.set_xticks(range(len(names)), names)
            ax.axhline(0.0, color="grey", linewidth=0.6)
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{mode}: {stat.replace('_abs', ' (abs)')}")
            ax.set_xlabel("randomized layer (top first)")
    axes[0][0].legend(fontsize=7)
    return fig


def render_figures(ev: Evaluation) -> list[tuple[str, bytes]]:
    """``(caption, PNG bytes)`` of the curves and (if sanity checks ran) the sanity figure.

    Rendering takes seconds: a caller that writes both the PNG files and the
    HTML page renders once and hands the result to both.
    """
    out = [("Deletion, insertion and ROAD curves", png(curves_figure(ev)))]
    if ev.sanity:
        out.append(("Sanity checks: similarity after randomizing layers", png(sanity_figure(ev))))
    return out


def save_figures(ev: Evaluation, folder: str | Path, rendered: list[tuple[str, bytes]] | None = None) -> list[Path]:
    """Write ``curves.png`` and (if sanity checks ran) ``sanity.png`` into ``folder``; returns the paths.

    ``rendered``: the figures of :func:`render_figures`, when already made.
    """
    folder = Path(folder)
    paths = []
    figures = render_figures(ev) if rendered is None else rendered
    for name, (_, data) in zip(("curves.png", "sanity.png"), figures, strict=False):
        paths.append(folder / name)
        atomic_write_bytes(paths[-1], data)
    return paths


def verdict_block(ev: Evaluation) -> h.Element:
    """The verdict as HTML: the headline, what was scored, the ranking and the skipped methods."""
    v = ev.verdict()
    cls = "verdict" if v.recommended is not None else "verdict none"
    return h.element(
        "div",
        h.paragraph(h.element("strong", "Verdict: "), v.headline),
        h.element("p", "Scored: " + v.setting_line(), class_="scored"),
        h.element("ol", *(h.element("li", line.split(". ", 1)[1]) for line in v.lines() if line[0].isdigit())),
        *(h.paragraph(f"Skipped {m}: {why}") for m, why in v.skipped),
        class_=cls,
    )


def html_section(ev: Evaluation, *, figures: bool | list[tuple[str, bytes]] = True) -> h.Element:
    """The report's ``<section class="camlens-evaluation">``: the verdict, the tables, the figures, a caveat.

    ``figures``: embed them (rendered here), leave them out, or the ones :func:`render_figures` made.
    """
    parts: list[h.Node] = [
        verdict_block(ev),
        h.paragraph(
            f"{ev.n_images} test images, {len(ev.config['seeds'])} seed(s); mean and 95\u00a0% bootstrap interval "
            "over images. \u2191 higher is better, \u2193 lower is better. Baselines (random, intensity, edge) "
            "know nothing of the model: a method should beat them."
        ),
        h.table(["entry", *(f"{METRICS[m][0]} {'↑' if METRICS[m][1] else '↓'}" for m in _shown(ev))],
                _summary_rows(ev)),
    ]
    if "random" in ev.values:
        parts.append(h.heading("Against the random map (paired differences)", 3))
        parts.append(h.table(["entry", *(METRICS[m][0] for m in COMPARED)], _comparison_rows(ev)))
    if ev.extra:
        note, head, rows = _extra_table(ev, "↑", "↓")
        parts += [h.heading("More metrics (opt-in)", 3), h.paragraph(note), h.table(head, rows)]
    if figures:
        made = render_figures(ev) if figures is True else figures
        parts += [h.figure(data, caption) for caption, data in made]
    parts.append(h.paragraph(WHAT_IT_SHOWS))
    return h.section("Is the map right? Faithfulness and sanity", *parts, class_="camlens-evaluation")


def html_page(ev: Evaluation, title: str | None = None, figures: bool | list[tuple[str, bytes]] = True) -> str:
    """A whole self-contained, styled HTML page holding :func:`html_section`; the title names the model scored."""
    if title is None:
        model = ev.config.get("model") or ev.config.get("model_name") or "a model"
        title = f"camlens evaluation of {model}"
    return h.page(title, html_section(ev, figures=figures), style=PAGE_STYLE)
