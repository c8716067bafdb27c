"""What an evaluation found: per-seed, per-image values and curves, and their bootstrap statistics.

:class:`Evaluation` holds the data :func:`camlens.evaluation.evaluate` collects
and computes the statistics (means, percentile bootstrap intervals, paired
differences to the random map); its output methods (table, JSON, figures,
HTML) are thin calls into :mod:`camlens.evaluation.render`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from camlens.errors import InputError

if TYPE_CHECKING:
    from camlens.evaluation.verdict import Verdict

__all__ = ["COMPARED", "METRICS", "SANITY_STATS", "Evaluation", "bootstrap_ci"]

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

#: the similarities the sanity checks record per randomization step.
SANITY_STATS = ("spearman", "spearman_abs", "ssim")

#: the metrics of the paired comparison against the random map in the table and the HTML.
COMPARED = ("deletion", "insertion", "road", "road_morf", "road_lerf")


@functools.lru_cache(maxsize=4)
def _resample_counts(n: int, n_boot: int, seed: int) -> Tensor:
    """``(n_boot, n)`` float64: how often each of the ``n`` values is drawn in each of :func:`bootstrap_ci`'s resamples.

    An evaluation bootstraps hundreds of metrics over the same images with the
    same seed, so the draws are the same each time: they are made once, and each
    interval is then one matrix-vector product (drawing and gathering them per
    call took 11 s of the README's 500-image example).
    """
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))


def bootstrap_ci(values: Tensor, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` ``(N,)`` (resampling the N entries).

    Returns:
        ``(low, high)``; both NaN if a value is NaN (nothing is hidden).

    Raises:
        InputError: no values.
    """
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        raise InputError("bootstrap_ci got no values; evaluate at least one image")
    means = _resample_counts(v.numel(), n_boot, int(seed)) @ v / v.numel()
    a = (1.0 - level) / 2
    q = torch.quantile(means, torch.tensor([a, 1.0 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])


def _extra_dict(ev: Evaluation) -> dict[str, Any]:
    """The ``"extra"`` part of :meth:`Evaluation.to_dict`."""
    from camlens.evaluation.extra import extra_label
    from camlens.metrics import OPT_IN_METRICS

    names = [n for n in OPT_IN_METRICS if any(n in d for d in ev.extra.values())]
    return {
        "metrics": {n: dict(zip(("label", "higher_is_better"), extra_label(n), strict=True)) for n in names},
        "summary": ev.extra_summary(),
        "per_seed_means": {e: {n: [float(v) for v in t.double().mean(dim=1)] for n, t in d.items()}
                           for e, d in ev.extra.items()},
        "skipped": ev.config.get("extra_skipped", []),
    }  # fmt: skip


@dataclass
class Evaluation:
    """The outcome of :func:`camlens.evaluation.evaluate`.

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
        n_boot: bootstrap resamples of every interval.
        extra: entry -> opt-in metric -> ``(S, n)`` per-seed, per-image values
            (``evaluate(extra_metrics=...)``, :mod:`camlens.evaluation.extra`; empty by default).
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
    extra: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    # ---- statistics ------------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        """The metrics scored, in :data:`METRICS` order (the pointing game only when an object was known)."""
        return [m for m in METRICS if m in self.values[self.entries[0]]]

    @property
    def n_images(self) -> int:
        """How many images every entry was scored on."""
        return int(self.values[self.entries[0]]["deletion"].shape[1])

    def _per_image(self, entry: str, metric: str) -> Tensor:
        return self.values[entry][metric].double().mean(dim=0)  # average the seeds, keep images

    def _ci(self, v: Tensor) -> tuple[float, float]:
        return bootstrap_ci(v, n_boot=self.n_boot, seed=self.config.get("seeds", [0])[0])

    def summary(self) -> list[dict[str, Any]]:
        """One row per entry and metric: mean and 95 % bootstrap interval over images (seeds averaged)."""
        rows = []
        for e in self.entries:
            for m in self.metrics:
                v = self._per_image(e, m)
                lo, hi = self._ci(v)
                rows.append({"entry": e, "metric": m, "mean": float(v.mean()), "low": lo, "high": hi, "n": v.numel()})
        return rows

    def comparisons(self, reference: str = "random") -> list[dict[str, Any]]:
        """Paired differences ``entry - reference`` per image, with a bootstrap interval and a verdict.

        ``better`` is True when the whole interval lies on the better side of
        zero (below for deletion/MoRF/drop, above for the others).

        Raises:
            InputError: ``reference`` was not evaluated.
        """
        if reference not in self.values:
            raise InputError(f"reference={reference!r} was not evaluated; choose one of {self.entries}")
        rows = []
        for e in self.entries:
            if e == reference:
                continue
            for m in self.metrics:
                higher = METRICS[m][1]
                d = self._per_image(e, m) - self._per_image(reference, m)
                lo, hi = self._ci(d)
                better = lo > 0 if higher else hi < 0
                worse = hi < 0 if higher else lo > 0
                verdict = "better" if better else ("worse" if worse else "undecided")
                rows.append({"entry": e, "reference": reference, "metric": m, "difference": float(d.mean()),
                             "low": lo, "high": hi, "verdict": verdict})
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

    def extra_summary(self) -> list[dict[str, Any]]:
        """Mean and 95 % interval of each opt-in metric per entry (:func:`camlens.evaluation.extra.extra_summary`)."""
        from camlens.evaluation.extra import extra_summary

        return extra_summary(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready Python objects (no per-image values; per-seed means are kept).

        ``"extra"`` (the opt-in metrics' labels, directions, summary and per-seed means) only when some were scored.
        """
        per_seed = {
            e: {m: [float(v) for v in t.double().mean(dim=1)] for m, t in self.values[e].items()} for e in self.entries
        }
        extra = {"extra": _extra_dict(self)} if self.extra else {}
        return {
            "config": self.config,
            "verdict": self.verdict().to_dict(),
            "metrics": {m: {"label": METRICS[m][0], "higher_is_better": METRICS[m][1]} for m in self.metrics},
            "summary": self.summary(),
            "vs_random": self.comparisons("random") if "random" in self.values else [],
            "per_seed_means": per_seed,
            "curves": {
                "fractions": self.fractions.tolist(),
                "percentages": self.percentages.tolist(),
                **{e: {k: v.tolist() for k, v in c.items()} for e, c in self.curves.items()},
            },
            "sanity": self.sanity_summary(),
            **extra,
            "timings_s": self.timings,
        }

    # ---- output: thin calls into camlens.evaluation.render ------------------------------------

    def verdict(self) -> Verdict:
        """Which method to use for this model, or that none beats the baselines (:mod:`camlens.evaluation.verdict`)."""
        from camlens.evaluation.verdict import verdict

        return verdict(self)

    def table(self) -> str:
        """The plain-text report (:func:`camlens.evaluation.render.text_table`)."""
        from camlens.evaluation.render import text_table

        return text_table(self)

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path`` (temporary file + rename)."""
        from camlens.evaluation.render import write_json

        return write_json(self, path)

    def curves_figure_png(self) -> bytes:
        """PNG of the mean deletion, insertion and ROAD curves of every entry."""
        from camlens.evaluation.render import curves_figure, png

        return png(curves_figure(self))

    def sanity_figure_png(self) -> bytes:
        """PNG of the sanity-check similarities per randomization step (rows: modes; columns: statistics)."""
        from camlens.evaluation.render import png, sanity_figure

        return png(sanity_figure(self))

    def save_figures(self, folder: str | Path) -> list[Path]:
        """Write ``curves.png`` and (if sanity checks ran) ``sanity.png`` into ``folder``; returns the paths."""
        from camlens.evaluation.render import save_figures

        return save_figures(self, folder)

    def html(self, *, figures: bool = True) -> str:
        """The report's ``<section>`` as HTML (a :class:`camlens.viz.html.Markup`), figures embedded."""
        from camlens.evaluation.render import html_section

        return html_section(self, figures=figures).render()
