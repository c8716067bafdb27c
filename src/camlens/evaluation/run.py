"""The evaluation driver: every metric for every method, layer and baseline, with bootstrap intervals.

:func:`evaluate` scores maps of registered methods (by name, from
:data:`camlens.METHODS`) at the given layers, beside model-free baselines
(random, input intensity, Sobel edges), over several seeds, and returns an
:class:`Evaluation` that prints a table, writes JSON and figures, and renders
an HTML fragment for the report. :func:`evaluate_checkpoint` does the same
for a checkpoint folder and the Fashion-MNIST test images.
"""

from __future__ import annotations

import html
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camlens._util.files import atomic_write_bytes
from camlens.errors import InputError
from camlens.methods import METHODS, get_method
from camlens.metrics import (
    BASELINES,
    ROAD_PERCENTAGES,
    ConfidenceResult,
    CurveResult,
    RoadResult,
    energy_pointing_game,
    layers_from_top,
    object_mask,
    sanity_check,
)
from camlens.metrics.batched import faithfulness
from camlens.metrics.sanity import image_map
from camlens.metrics.perturbation import _pixel_counts

__all__ = [
    "METRICS",
    "Evaluation",
    "bootstrap_ci",
    "evaluate",
    "evaluate_checkpoint",
]

#: metric name -> (label, True if higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "deletion": ("Deletion AUC", False),
    "insertion": ("Insertion AUC", True),
    "road": ("ROAD (LeRF-MoRF)", True),
    "road_morf": ("ROAD MoRF", False),
    "road_lerf": ("ROAD LeRF", True),
    "average_drop": ("Average Drop %", False),
    "increase": ("Increase in Conf. %", True),
    "pointing": ("Energy pointing (area-norm.)", True),
}

SANITY_STATS = ("spearman", "spearman_abs", "ssim")

#: the metrics of the paired comparison against the random map in the table and the HTML.
COMPARED = ("deletion", "insertion", "road", "road_morf", "road_lerf")


def bootstrap_ci(values: Tensor, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` ``(N,)`` (resampling the N entries).

    Returns:
        ``(low, high)``; both NaN if a value is NaN (nothing is hidden).
    """
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        raise InputError("bootstrap_ci got no values; evaluate at least one image")
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(v.numel(), (n_boot, v.numel()), generator=gen)
    means = v[idx].mean(dim=1)
    a = (1.0 - level) / 2
    q = torch.quantile(means, torch.tensor([a, 1.0 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`.

    Attributes:
        entries: what was scored: ``"method@layer"`` for the methods, the bare
            name for the baselines (``"random"``, ``"intensity"``, ``"edge"``).
        values: entry -> metric -> ``(S, N)`` per-seed, per-image values.
        curves: entry -> ``"deletion"``/``"insertion"`` ``(steps+1,)`` and
            ``"road_morf"``/``"road_lerf"`` ``(P,)`` mean curves over seeds and images.
        fractions: ``(steps+1,)`` x-axis of the deletion/insertion curves.
        percentages: ``(P,)`` x-axis of the ROAD curves.
        sanity: ``"method@layer"`` -> mode -> ``{"layers": [...], stat: (S, L, n)}``
            for the randomization tests (``stat`` in spearman, spearman_abs, ssim).
        config: the arguments of the run; timings: seconds per phase.
    """

    entries: list[str]
    values: dict[str, dict[str, Tensor]]
    curves: dict[str, dict[str, Tensor]]
    fractions: Tensor
    percentages: Tensor
    sanity: dict[str, dict[str, dict[str, Any]]]
    config: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    n_boot: int = 2000

    # ---- statistics ------------------------------------------------------------------------

    def _per_image(self, entry: str, metric: str) -> Tensor:
        return self.values[entry][metric].double().mean(dim=0)  # average the seeds, keep images

    def summary(self) -> list[dict[str, Any]]:
        """One row per entry and metric: mean and 95 % bootstrap interval over images (seeds averaged)."""
        rows = []
        for e in self.entries:
            for m in METRICS:
                v = self._per_image(e, m)
                lo, hi = bootstrap_ci(v, n_boot=self.n_boot, seed=self.config.get("seeds", [0])[0])
                rows.append({"entry": e, "metric": m, "mean": float(v.mean()), "low": lo, "high": hi, "n": v.numel()})
        return rows

    def comparisons(self, reference: str = "random") -> list[dict[str, Any]]:
        """Paired differences ``entry - reference`` per image, with a bootstrap interval and a verdict.

        ``better`` is True when the whole interval lies on the better side of
        zero (below for deletion/MoRF/drop, above for the others).
        """
        if reference not in self.values:
            raise InputError(f"reference={reference!r} was not evaluated; choose one of {self.entries}")
        rows = []
        for e in self.entries:
            if e == reference:
                continue
            for m, (_, higher) in METRICS.items():
                d = self._per_image(e, m) - self._per_image(reference, m)
                lo, hi = bootstrap_ci(d, n_boot=self.n_boot, seed=self.config.get("seeds", [0])[0])
                better = lo > 0 if higher else hi < 0
                worse = hi < 0 if higher else lo > 0
                rows.append(
                    {
                        "entry": e,
                        "reference": reference,
                        "metric": m,
                        "difference": float(d.mean()),
                        "low": lo,
                        "high": hi,
                        "verdict": "better" if better else ("worse" if worse else "undecided"),
                    }
                )
        return rows

    def sanity_summary(self) -> list[dict[str, Any]]:
        """Mean and interval of each similarity after each randomization step, per method@layer and mode."""
        rows = []
        for e, modes in self.sanity.items():
            for mode, res in modes.items():
                for i, layer in enumerate(res["layers"]):
                    row: dict[str, Any] = {"entry": e, "mode": mode, "randomized": layer, "step": i}
                    for s in SANITY_STATS:
                        v = res[s][:, i].double().mean(dim=0)  # seeds averaged, per image
                        lo, hi = bootstrap_ci(v, n_boot=self.n_boot)
                        row[s] = {"mean": float(v.mean()), "low": lo, "high": hi}
                    rows.append(row)
        return rows

    # ---- output -----------------------------------------------------------------------------

    def table(self) -> str:
        """The plain-text report: metrics per entry, differences against the random map, sanity checks."""
        summary = {(r["entry"], r["metric"]): r for r in self.summary()}
        shown = ["deletion", "insertion", "road", "average_drop", "increase", "pointing"]
        head = ["entry"] + [METRICS[m][0] + (" ^" if METRICS[m][1] else " v") for m in shown]
        body = []
        for e in self.entries:
            cells = [e]
            for m in shown:
                r = summary[(e, m)]
                cells.append(f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
            body.append(cells)
        out = [f"{len(self.values[self.entries[0]]['deletion'][0])} images x {len(self.config['seeds'])} seed(s); "
               "mean [95% bootstrap interval]; ^ higher is better, v lower is better"]
        out.append(_format_rows(head, body))
        if "random" in self.values:
            out.append("\nDifference to the random map (paired per image): mean [95% interval] verdict")
            comp = self.comparisons("random")
            rows = []
            for e in [x for x in self.entries if x != "random"]:
                cells = [e]
                for m in COMPARED:
                    r = next(c for c in comp if c["entry"] == e and c["metric"] == m)
                    cells.append(f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] {r['verdict']}")
                rows.append(cells)
            out.append(_format_rows(["entry", *COMPARED], rows))
        if self.sanity:
            out.append("\nSanity checks (Adebayo 2018): similarity to the original maps after randomizing, top first")
            rows = []
            for r in self.sanity_summary():
                rows.append(
                    [r["entry"], r["mode"], f"{r['step'] + 1}: {r['randomized']}"]
                    + [f"{r[s]['mean']:+.3f} [{r[s]['low']:+.3f}, {r[s]['high']:+.3f}]" for s in SANITY_STATS]
                )
            out.append(_format_rows(["entry", "mode", "randomized", "Spearman", "Spearman |.|", "SSIM"], rows))
        out.append("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready Python objects (no per-image values; per-seed means are kept)."""
        per_seed = {
            e: {m: [float(v) for v in t.double().mean(dim=1)] for m, t in self.values[e].items()} for e in self.entries
        }
        return {
            "config": self.config,
            "metrics": {m: {"label": lab, "higher_is_better": hi} for m, (lab, hi) in METRICS.items()},
            "summary": self.summary(),
            "vs_random": self.comparisons("random") if "random" in self.values else [],
            "per_seed_means": per_seed,
            "curves": {
                "fractions": self.fractions.tolist(),
                "percentages": self.percentages.tolist(),
                **{e: {k: v.tolist() for k, v in c.items()} for e, c in self.curves.items()},
            },
            "sanity": self.sanity_summary(),
            "timings_s": self.timings,
        }

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path`` (temporary file + rename)."""
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    def curves_figure_png(self) -> bytes:
        """PNG of the mean deletion, insertion and ROAD curves of every entry."""
        plt = _pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        x = self.fractions.tolist()
        q = self.percentages.tolist()
        for e in self.entries:
            style = {"linestyle": "--" if e in BASELINES else "-", "linewidth": 1.2}
            axes[0].plot(x, self.curves[e]["deletion"].tolist(), label=e, **style)
            axes[1].plot(x, self.curves[e]["insertion"].tolist(), label=e, **style)
            (line,) = axes[2].plot(q, self.curves[e]["road_morf"].tolist(), label=f"{e} MoRF", **style)
            axes[2].plot(q, self.curves[e]["road_lerf"].tolist(), color=line.get_color(), linestyle=":", linewidth=1.2)
        for ax, title, xl in zip(
            axes,
            ("Deletion (lower is better)", "Insertion (higher is better)", "ROAD: MoRF solid/dashed, LeRF dotted"),
            ("fraction of pixels removed", "fraction of pixels inserted", "fraction of pixels imputed"),
        ):
            ax.set_title(title)
            ax.set_xlabel(xl)
            ax.set_ylabel("probability of the explained class")
            ax.set_ylim(0, 1.02)
        axes[1].legend(fontsize=7, loc="lower right")
        return _png(fig)

    def sanity_figure_png(self) -> bytes:
        """PNG of the sanity-check similarities per randomization step (rows: modes; columns: statistics)."""
        plt = _pyplot()
        modes = sorted({m for v in self.sanity.values() for m in v})
        fig, axes = plt.subplots(len(modes), 3, figsize=(15, 3.8 * len(modes)), squeeze=False)
        for row, mode in enumerate(modes):
            for col, stat in enumerate(SANITY_STATS):
                ax = axes[row][col]
                for e, res in self.sanity.items():
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
        return _png(fig)

    def save_figures(self, folder: str | Path) -> list[Path]:
        """Write ``curves.png`` and (if sanity checks ran) ``sanity.png`` into ``folder``; returns the paths."""
        folder = Path(folder)
        paths = [folder / "curves.png"]
        atomic_write_bytes(paths[0], self.curves_figure_png())
        if self.sanity:
            paths.append(folder / "sanity.png")
            atomic_write_bytes(paths[1], self.sanity_figure_png())
        return paths

    def html(self, *, figures: bool = True) -> str:
        """An HTML fragment (a ``<section>``) with the tables and the figures as embedded base64 PNGs."""
        import base64

        summary = {(r["entry"], r["metric"]): r for r in self.summary()}
        shown = ["deletion", "insertion", "road", "average_drop", "increase", "pointing"]
        parts = ['<section class="camlens-evaluation">', "<h2>Is the map right? Faithfulness and sanity</h2>"]
        n = self.values[self.entries[0]]["deletion"].shape[1]
        parts.append(
            f"<p>{n} test images, {len(self.config['seeds'])} seed(s); mean and 95&nbsp;% bootstrap interval "
            "over images. &uarr; higher is better, &darr; lower is better. Baselines (random, intensity, edge) "
            "know nothing of the model: a method should beat them.</p>"
        )
        parts.append("<table><thead><tr><th>entry</th>")
        parts += [f"<th>{html.escape(METRICS[m][0])} {'&uarr;' if METRICS[m][1] else '&darr;'}</th>" for m in shown]
        parts.append("</tr></thead><tbody>")
        for e in self.entries:
            parts.append(f"<tr><td>{html.escape(e)}</td>")
            for m in shown:
                r = summary[(e, m)]
                parts.append(f"<td>{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
        if "random" in self.values:
            parts.append("<h3>Against the random map (paired differences)</h3><table><thead><tr><th>entry</th>")
            parts += [f"<th>{METRICS[m][0]}</th>" for m in COMPARED]
            parts.append("</tr></thead><tbody>")
            comp = self.comparisons("random")
            for e in [x for x in self.entries if x != "random"]:
                parts.append(f"<tr><td>{html.escape(e)}</td>")
                for m in COMPARED:
                    r = next(c for c in comp if c["entry"] == e and c["metric"] == m)
                    parts.append(
                        f"<td>{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] {r['verdict']}</td>"
                    )
                parts.append("</tr>")
            parts.append("</tbody></table>")
        if figures:
            images = [("Deletion, insertion and ROAD curves", self.curves_figure_png())]
            if self.sanity:
                images.append(("Sanity checks: similarity after randomizing layers", self.sanity_figure_png()))
            for alt, png in images:
                b64 = base64.b64encode(png).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">')
                parts.append(f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        parts.append(
            "<p>What this shows: whether removing what a map highlights changes the model's output "
            "(deletion, insertion, ROAD), and whether the map changes when the model's weights are destroyed "
            "(sanity checks). What it does not show: that the map matches human reasoning, or that the "
            "model is right.</p>"
        )
        parts.append("</section>")
        return "\n".join(parts)


def _format_rows(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("evaluation figures need matplotlib: pip install 'camlens[plot]'") from None
    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _method_maps(model: nn.Module, x: Tensor, method: str, layers: list[str], batch_size: int) -> dict[str, Tensor]:
    """Normalized maps ``(N, H, W)`` of one method, per key of its ``result.maps`` (one forward/backward per chunk).

    The keys are the layers, or ``"input"`` for a method whose map is input-sized (guided backprop);
    input-like ``(N, C, H, W)`` maps are averaged over channels (:func:`camlens.metrics.sanity.image_map`).
    """
    explainer = get_method(method)(model, layers)
    out: dict[str, list[Tensor]] = {}
    for xc in x.split(batch_size):
        res = explainer(xc)
        for key, mp in res.maps.items():
            out.setdefault(key, []).append(image_map(mp.detach()))
    return {key: torch.cat(v) for key, v in out.items()}


def evaluate(
    model: nn.Module,
    x: Tensor,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    baselines: Sequence[str] = tuple(BASELINES),
    steps: int = 16,
    insertion_baseline: str = "blur",
    deletion_baseline: str = "zero",
    road_percentages: Sequence[float] = ROAD_PERCENTAGES,
    road_noise: float = 0.01,
    sanity: bool = True,
    sanity_images: int = 100,
    sanity_modes: Sequence[str] = ("cascading", "independent"),
    batch_size: int = 512,
    n_boot: int = 2000,
) -> Evaluation:
    """Score methods at layers, beside model-free baselines, on images ``x``.

    For each seed, every entry (``method@layer`` and each baseline) gets the
    deletion and insertion AUC, ROAD, Average Drop and Increase in
    Confidence, and the area-normalized energy pointing game (object = the
    nonzero pixels), all for the class the model predicts. Seeds change the
    random map, the tie-breaking order of equal saliencies, the ROAD noise and
    the re-initialization of the sanity checks; the images stay the same, so
    intervals are bootstrapped over images (seeds averaged per image) and
    differences to the random map are paired per image.

    Args:
        model: a classifier in eval mode (it is not changed).
        x: ``(N, C, H, W)`` images on the model's device.
        methods: names in :data:`camlens.METHODS` (default: all registered).
        layers: layer names (default: ``model.conv_layers`` if it has them).
        seeds: one or more seeds.
        baselines: names in :data:`camlens.metrics.BASELINES`.
        steps: deletion/insertion steps.
        insertion_baseline, deletion_baseline: see :func:`camlens.metrics.insertion` / ``deletion``.
        road_percentages, road_noise: see :func:`camlens.metrics.road`.
        sanity: run the randomization checks (on the first ``sanity_images`` images).
        sanity_modes: ``"cascading"`` and/or ``"independent"``.
        batch_size: images per forward pass.
        n_boot: bootstrap resamples.

    Returns:
        An :class:`Evaluation`.

    Raises:
        InputError: a model in training mode, unknown methods, layers or baselines, no seeds.
    """
    if model.training:
        raise InputError(
            f"{type(model).__name__} is in training mode (dropout/batch-norm would add noise to every metric); "
            "call model.eval() before evaluate()"
        )
    if x.ndim != 4 or x.shape[0] == 0:
        raise InputError(f"x must be a non-empty image batch (N, C, H, W), got shape {tuple(x.shape)}")
    methods = sorted(METHODS) if methods is None else list(methods)
    for m in methods:
        try:
            get_method(m)
        except KeyError as err:
            raise InputError(str(err.args[0])) from None
    if layers is None:
        layers = list(getattr(model, "conv_layers", ()))
        if not layers:
            raise InputError(f"give layers=[...]: {type(model).__name__} has no conv_layers attribute to default to")
    layers = list(layers)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise InputError(f"baselines {unknown} are not among {sorted(BASELINES)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InputError("seeds=[] gives no run; pass at least one seed, e.g. seeds=(0,)")
    config: dict[str, Any] = {
        "methods": methods,
        "layers": layers,
        "seeds": seeds,
        "baselines": list(baselines),
        "n_images": int(x.shape[0]),
        "steps": steps,
        "insertion_baseline": insertion_baseline,
        "deletion_baseline": deletion_baseline,
        "road_percentages": [float(q) for q in road_percentages],
        "road_noise": road_noise,
        "sanity_images": min(sanity_images, int(x.shape[0])) if sanity else 0,
        "sanity_modes": list(sanity_modes) if sanity else [],
        "target": "predicted class",
        "device": str(x.device),
    }
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    maps: dict[str, Tensor] = {}
    explained: list[tuple[str, str]] = []  # (method, layer or "input") in entry order
    for m in methods:
        for key, mp in _method_maps(model, x, m, layers, batch_size).items():
            maps[f"{m}@{key}"] = mp
            explained.append((m, key))
    timings["maps"] = time.perf_counter() - t0

    entries = list(maps) + list(baselines)
    mask = object_mask(x)
    values: dict[str, dict[str, list[Tensor]]] = {e: {k: [] for k in METRICS} for e in entries}
    sums: dict[str, dict[str, Tensor]] = {}
    fractions = percentages = torch.empty(0)
    t0 = time.perf_counter()
    for seed in seeds:
        t_seed = time.perf_counter()
        seed_maps = {e: maps[e] if e in maps else BASELINES[e](x, seed) for e in entries}
        classes, scores = faithfulness(
            model, x, seed_maps, seed=seed, steps=steps, deletion_baseline=deletion_baseline,
            insertion_baseline=insertion_baseline, percentages=road_percentages, noise=road_noise,
            batch_size=batch_size,
        )
        fr = _pixel_counts(x.shape[2] * x.shape[3], steps, x.device).to(x.dtype) / (x.shape[2] * x.shape[3])
        for e in entries:
            sc = scores[e]
            dele = CurveResult(fr, sc.deletion, torch.trapezoid(sc.deletion, fr, dim=1), classes)
            ins = CurveResult(fr, sc.insertion, torch.trapezoid(sc.insertion, fr, dim=1), classes)
            qs = torch.tensor([float(q) for q in road_percentages], dtype=torch.float32, device=x.device)
            rd = RoadResult(qs, sc.morf, sc.lerf, classes)
            conf = ConfidenceResult(sc.full, sc.masked, classes)
            point = energy_pointing_game(seed_maps[e], mask)
            v = values[e]
            v["deletion"].append(dele.auc)
            v["insertion"].append(ins.auc)
            v["road"].append(rd.score)
            v["road_morf"].append(rd.morf_score)
            v["road_lerf"].append(rd.lerf_score)
            v["average_drop"].append(100.0 * conf.drop)
            v["increase"].append(100.0 * conf.increase)
            v["pointing"].append(point)
            acc = sums.setdefault(e, {})
            named = (
                ("deletion", dele.curves), ("insertion", ins.curves), ("road_morf", rd.morf), ("road_lerf", rd.lerf)
            )
            for k, t in named:
                acc[k] = acc.get(k, 0) + t.double().mean(dim=0) / len(seeds)
            fractions, percentages = dele.fractions, rd.percentages
        timings[f"metrics_seed{seed}"] = time.perf_counter() - t_seed
    timings["metrics"] = time.perf_counter() - t0

    sanity_out: dict[str, dict[str, dict[str, Any]]] = {}
    if sanity:
        t0 = time.perf_counter()
        xs = x[:sanity_images]
        order = layers_from_top(model, xs[:1])
        for m, where in explained:
            key = f"{m}@{where}"
            layer = where if where in layers else layers[0]  # an input-sized map ignores the layer
            for mode in sanity_modes:
                runs = [sanity_check(model, xs, m, layer, mode=mode, layers=order, seed=s) for s in seeds]
                sanity_out.setdefault(key, {})[mode] = {
                    "layers": runs[0].layers,
                    **{s: torch.stack([getattr(r, s) for r in runs]).cpu() for s in SANITY_STATS},
                }
        timings["sanity"] = time.perf_counter() - t0

    return Evaluation(
        entries=entries,
        values={e: {k: torch.stack(v).cpu() for k, v in d.items()} for e, d in values.items()},
        curves={e: {k: t.float().cpu() for k, t in c.items()} for e, c in sums.items()},
        fractions=fractions.cpu(),
        percentages=percentages.cpu(),
        sanity=sanity_out,
        config=config,
        timings=timings,
        n_boot=n_boot,
    )


def evaluate_checkpoint(
    path: str | Path,
    *,
    n_images: int = 500,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "cpu",
    **kwargs: Any,
) -> Evaluation:
    """:func:`evaluate` a checkpoint folder on ``n_images`` Fashion-MNIST images.

    The images are drawn without replacement from ``split`` by a permutation
    seeded with the first seed (``seeds[0]``), so a run is reproducible.

    Args:
        path: a folder written by :func:`camlens.demo.checkpoint.save_checkpoint`.
        n_images: how many images (at most the split's size).
        data: a folder of Fashion-MNIST IDX files; ``None`` for the bundled sample.
        split: ``"test"`` or ``"train"``.
        device: where to run.
        **kwargs: passed to :func:`evaluate` (methods, layers, seeds, ...).
    """
    from camlens.demo.checkpoint import load_checkpoint
    from camlens.demo.data import FashionMNIST

    model, meta = load_checkpoint(path, device=device)
    images, labels = FashionMNIST(data, split).tensors()
    if not isinstance(n_images, int) or not 1 <= n_images <= images.shape[0]:
        raise InputError(f"n_images={n_images!r} must be an int from 1 to {images.shape[0]} (the {split} split's size)")
    seeds = list(kwargs.get("seeds", (0,)))
    gen = torch.Generator().manual_seed(int(seeds[0]) if seeds else 0)
    idx = torch.randperm(images.shape[0], generator=gen)[:n_images]
    x = images[idx].to(device)
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1).cpu() for c in x.split(512)])
    result = evaluate(model, x, **kwargs)
    result.config.update(
        {
            "checkpoint": str(path),
            "architecture": meta.get("architecture"),
            "split": split,
            "data": "bundled sample" if data is None else str(data),
            "accuracy_on_images": float((pred == labels[idx]).double().mean()),
        }
    )
    return result
