"""The opt-in metrics of an evaluation (``evaluate(extra_metrics=...)``): scored beside the others, not in the verdict.

Two kinds, by name (:data:`camlens.metrics.OPT_IN_METRICS`):

- **map-only** (:data:`camlens.metrics.MAP_METRICS`: sparseness, effective
  complexity, and, when an object is known, pointing-game hit rate and
  relevance rank accuracy): on the maps the other metrics score (ReLU'd,
  upsampled, min-max normalized; channel mean for an input-sized map), every
  image, for the methods and the baselines; no forward pass;
- **explainer-call** (:data:`camlens.metrics.EXTRA_METRICS`: efficient and
  smooth MPRT, random-logit, max-sensitivity, via
  :func:`camlens.metrics.score_extra`): each method at its layer, on the first
  ``sanity_images`` images (the sanity checks' subset), once per seed; 2 to
  201 explainer calls per image each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens._util.progress import progress_bar
from camlens.errors import CamlensError, InputError
from camlens.metrics import BASELINES, EXTRA_METRICS, MAP_METRICS, OPT_IN_METRICS, score_extra

if TYPE_CHECKING:
    from camlens.evaluation.result import Evaluation

__all__ = ["extra_label", "extra_summary", "resolve_extra", "score_extras"]


def resolve_extra(names: Sequence[str]) -> list[str]:
    """The requested opt-in metrics in report order; ``"all"`` is every one.

    Raises:
        InputError: a name that is not in :data:`camlens.metrics.OPT_IN_METRICS` (nor ``"all"``).
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n != "all" and n not in OPT_IN_METRICS]
    if unknown:
        raise InputError(f"extra_metrics: no metric {unknown[0]!r}; choose from all, {', '.join(OPT_IN_METRICS)}")
    return [n for n in OPT_IN_METRICS if "all" in names or n in names]


def extra_label(name: str) -> tuple[str, bool]:
    """``(label, higher_is_better)`` of an opt-in metric."""
    m = MAP_METRICS[name] if name in MAP_METRICS else EXTRA_METRICS[name]
    return m.label, m.higher_is_better


def _map_only(
    x: Tensor, maps: dict[str, Tensor], baselines: list[str], seeds: list[int], names: list[str], mask: Tensor | None
) -> dict[str, dict[str, Tensor]]:
    """entry -> metric -> ``(S, N)`` for the map-only metrics, methods' maps and each seed's baseline maps."""
    out: dict[str, dict[str, Tensor]] = {}
    for e in [*maps, *baselines]:
        for name in names:
            runs = [MAP_METRICS[name].score(maps[e] if e in maps else BASELINES[e](x, s), mask) for s in seeds]
            out.setdefault(e, {})[name] = torch.stack(runs).cpu()
    return out


def score_extras(
    model: nn.Module, x: Tensor, maps: dict[str, Tensor], explained: list[tuple[str, str]], layers: list[str],
    baselines: list[str], seeds: list[int], names: list[str], mask: Tensor | None, config: dict[str, Any], *,
    n_explain: int, batch_size: int, progress: bool = False,
) -> dict[str, dict[str, Tensor]]:  # fmt: skip
    """Score the opt-in metrics ``names``: entry -> metric -> ``(S, n)`` (module doc).

    A metric that needs an object when none is known, or a method the metric cannot run
    (a camlens error), is left out with one line in ``config["extra_skipped"]``.
    """
    skipped: list[list[str]] = config.setdefault("extra_skipped", [])
    on_maps = [n for n in names if n in MAP_METRICS and (mask is not None or not MAP_METRICS[n].needs_object)]
    skipped += [["*", n, "no object known (pass objects= or --objects)"]
                for n in names if n in MAP_METRICS and n not in on_maps]  # fmt: skip
    out = _map_only(x, maps, baselines, seeds, on_maps, mask)
    calls = [n for n in names if n in EXTRA_METRICS]
    bar = progress_bar(len(explained) * len(calls) * len(seeds), "extra metrics", enabled=progress and bool(calls))
    for m, where in explained:
        layer = where if where in layers else layers[0]  # an input-sized map ignores the layer
        for name in calls:
            try:
                runs = []
                for s in seeds:
                    got = score_extra(model, x[:n_explain], m, layer, [name], seed=s, batch_size=batch_size)
                    runs.append(got[name])
                    if bar is not None:
                        bar.update(1)
                out.setdefault(f"{m}@{where}", {})[name] = torch.stack(runs).cpu()
            except CamlensError as err:
                skipped.append([f"{m}@{where}", name, f"{type(err).__name__}: {str(err).splitlines()[0]}"])
    if bar is not None:
        bar.close()
    return out


def extra_summary(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per entry and opt-in metric: mean and 95 % bootstrap interval over images (seeds averaged)."""
    rows = []
    for e, by_metric in ev.extra.items():
        for name in OPT_IN_METRICS:
            if name in by_metric:
                v = by_metric[name].double().mean(dim=0)
                lo, hi = ev._ci(v)  # the evaluation's own intervals: its resamples and seed
                rows.append({"entry": e, "metric": name, "mean": float(v.mean()), "low": lo, "high": hi,
                             "n": v.numel()})  # fmt: skip
    return rows
