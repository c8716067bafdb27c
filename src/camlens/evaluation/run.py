"""Running an evaluation: collect the maps, score every entry for each seed, run the sanity checks.

:func:`evaluate` scores maps of registered methods (by name, from
:data:`camlens.METHODS`) at the given layers (the automatic choice,
:func:`camlens.core.autolayer.choose_layer`, by default), beside model-free
baselines (random, input intensity, Sobel edges), over several seeds, and
returns an :class:`~camlens.evaluation.result.Evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camlens.errors import InputError
from camlens.evaluation.result import METRICS, SANITY_STATS, Evaluation
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
from camlens.metrics.perturbation import _pixel_counts
from camlens.metrics.sanity import image_map

__all__ = ["Scoring", "collect_maps", "default_layers", "evaluate", "run_sanity", "score_seed"]


@dataclass(frozen=True)
class Scoring:
    """How every map is scored: the arguments of :func:`camlens.metrics.batched.faithfulness`."""

    steps: int = 16
    insertion_baseline: str = "blur"
    deletion_baseline: str = "zero"
    road_percentages: Sequence[float] = ROAD_PERCENTAGES
    road_noise: float = 0.01
    batch_size: int = 512


def default_layers(model: nn.Module, x: Tensor, batch_size: int) -> list[str]:
    """The automatic choice for the first batch of ``x``, as a method given ``layers=None`` makes it.

    :func:`camlens.core.autolayer.choose_layer` on ``x[:batch_size]`` (the
    input of the first explainer call) with the predicted class as target.
    """
    from camlens.core.autolayer import choose_layer
    from camlens.core.wrapped import unwrap_model

    with torch.inference_mode(False):
        return [choose_layer(unwrap_model(model), x[:batch_size])]


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


def collect_maps(
    model: nn.Module, x: Tensor, methods: Sequence[str], layers: list[str], batch_size: int
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """Every method's maps at every layer.

    Returns:
        ``({"method@key": (N, H, W)}, [(method, key), ...])`` in entry order,
        ``key`` a layer or ``"input"`` for an input-sized method.
    """
    maps: dict[str, Tensor] = {}
    explained: list[tuple[str, str]] = []
    for m in methods:
        for key, mp in _method_maps(model, x, m, layers, batch_size).items():
            maps[f"{m}@{key}"] = mp
            explained.append((m, key))
    return maps, explained


def score_seed(
    model: nn.Module, x: Tensor, maps: dict[str, Tensor], mask: Tensor, seed: int, scoring: Scoring
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Every metric of every map for one seed, for the predicted class.

    Args:
        maps: entry -> ``(N, H, W)`` map; mask: ``(N, H, W)`` object mask for the pointing game.

    Returns:
        ``(values, curves, fractions, percentages)``: entry -> metric -> ``(N,)``;
        entry -> curve name -> ``(N, steps+1)`` or ``(N, P)``; the curves' x-axes.
    """
    classes, scores = faithfulness(
        model, x, maps, seed=seed, steps=scoring.steps, deletion_baseline=scoring.deletion_baseline,
        insertion_baseline=scoring.insertion_baseline, percentages=scoring.road_percentages,
        noise=scoring.road_noise, batch_size=scoring.batch_size,
    )  # fmt: skip
    hw = x.shape[2] * x.shape[3]
    fr = _pixel_counts(hw, scoring.steps, x.device).to(x.dtype) / hw
    qs = torch.tensor([float(q) for q in scoring.road_percentages], dtype=torch.float32, device=x.device)
    values: dict[str, dict[str, Tensor]] = {}
    curves: dict[str, dict[str, Tensor]] = {}
    for e, sc in scores.items():
        dele = CurveResult(fr, sc.deletion, torch.trapezoid(sc.deletion, fr, dim=1), classes)
        ins = CurveResult(fr, sc.insertion, torch.trapezoid(sc.insertion, fr, dim=1), classes)
        rd = RoadResult(qs, sc.morf, sc.lerf, classes)
        conf = ConfidenceResult(sc.full, sc.masked, classes)
        values[e] = {
            "deletion": dele.auc, "insertion": ins.auc, "road": rd.score, "road_morf": rd.morf_score,
            "road_lerf": rd.lerf_score, "average_drop": 100.0 * conf.drop, "increase": 100.0 * conf.increase,
            "pointing": energy_pointing_game(maps[e], mask),
        }  # fmt: skip
        curves[e] = {"deletion": dele.curves, "insertion": ins.curves, "road_morf": rd.morf, "road_lerf": rd.lerf}
    return values, curves, fr, qs


def run_sanity(
    model: nn.Module, x: Tensor, explained: list[tuple[str, str]], layers: list[str], seeds: list[int],
    modes: Sequence[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    """The randomization checks (Adebayo et al. 2018) of every explained ``(method, key)`` on ``x``.

    Returns:
        ``"method@key"`` -> mode -> ``{"layers": [...], stat: (S, L, N)}``.
    """
    order = layers_from_top(model, x[:1])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m, where in explained:
        layer = where if where in layers else layers[0]  # an input-sized map ignores the layer
        for mode in modes:
            runs = [sanity_check(model, x, m, layer, mode=mode, layers=order, seed=s) for s in seeds]
            out.setdefault(f"{m}@{where}", {})[mode] = {
                "layers": runs[0].layers,
                **{s: torch.stack([getattr(r, s) for r in runs]).cpu() for s in SANITY_STATS},
            }
    return out


def _check(model: nn.Module, x: Tensor, methods: list[str], baselines: Sequence[str], seeds: list[int]) -> None:
    if model.training:
        raise InputError(
            f"{type(model).__name__} is in training mode (dropout/batch-norm would add noise to every metric); "
            "call model.eval() before evaluate()"
        )
    if x.ndim != 4 or x.shape[0] == 0:
        raise InputError(f"x must be a non-empty image batch (N, C, H, W), got shape {tuple(x.shape)}")
    for m in methods:
        try:
            get_method(m)
        except KeyError as err:
            raise InputError(str(err.args[0])) from None
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise InputError(f"baselines {unknown} are not among {sorted(BASELINES)}")
    if not seeds:
        raise InputError("seeds=[] gives no run; pass at least one seed, e.g. seeds=(0,)")


def _config(x: Tensor, scoring: Scoring, sanity_images: int, sanity_modes: Sequence[str]) -> dict[str, Any]:
    """The rest of an evaluation's recorded arguments, after methods, layers, seeds and baselines."""
    return {
        "n_images": int(x.shape[0]), "steps": scoring.steps, "insertion_baseline": scoring.insertion_baseline,
        "deletion_baseline": scoring.deletion_baseline,
        "road_percentages": [float(q) for q in scoring.road_percentages], "road_noise": scoring.road_noise,
        "sanity_images": min(sanity_images, int(x.shape[0])), "sanity_modes": list(sanity_modes),
        "target": "predicted class", "device": str(x.device),
    }  # fmt: skip


def _score_all(
    model: nn.Module, x: Tensor, maps: dict[str, Tensor], entries: list[str], seeds: list[int], scoring: Scoring,
    timings: dict[str, float],
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Every seed's scores stacked ``(S, N)`` and the curves averaged over seeds and images; times in ``timings``."""
    t0 = time.perf_counter()
    mask = object_mask(x)
    values: dict[str, dict[str, list[Tensor]]] = {e: {k: [] for k in METRICS} for e in entries}
    sums: dict[str, dict[str, Any]] = {}
    fractions = percentages = torch.empty(0)
    for seed in seeds:
        t_seed = time.perf_counter()
        seed_maps = {e: maps[e] if e in maps else BASELINES[e](x, seed) for e in entries}
        vals, curves, fractions, percentages = score_seed(model, x, seed_maps, mask, seed, scoring)
        for e in entries:
            for k, t in vals[e].items():
                values[e][k].append(t)
            acc = sums.setdefault(e, {})
            for k, t in curves[e].items():
                acc[k] = acc.get(k, 0) + t.double().mean(dim=0) / len(seeds)
        timings[f"metrics_seed{seed}"] = time.perf_counter() - t_seed
    timings["metrics"] = time.perf_counter() - t0
    stacked = {e: {k: torch.stack(v).cpu() for k, v in d.items()} for e, d in values.items()}
    means = {e: {k: t.float().cpu() for k, t in c.items()} for e, c in sums.items()}
    return stacked, means, fractions.cpu(), percentages.cpu()


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
        layers: layer names (default: the automatic choice, :func:`default_layers`).
        seeds: one or more seeds.
        baselines: names in :data:`camlens.metrics.BASELINES`.
        steps: deletion/insertion steps.
        insertion_baseline, deletion_baseline: see :func:`camlens.metrics.insertion` / ``deletion``.
        road_percentages, road_noise: see :func:`camlens.metrics.road`.
        sanity, sanity_images, sanity_modes: run the randomization checks (``"cascading"`` and/or
            ``"independent"``) on the first ``sanity_images`` images.
        batch_size: images per forward pass; n_boot: bootstrap resamples.

    Returns:
        An :class:`~camlens.evaluation.result.Evaluation`.

    Raises:
        InputError: a model in training mode, unknown methods, layers or baselines, no seeds.
        LayerNotUsedError: ``layers=None`` and no layer can be chosen automatically.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 8 * 8, 3)).eval()
        >>> ev = evaluate(net, torch.rand(4, 1, 8, 8), methods=["gradcam"], baselines=["random"], steps=4,
        ...               sanity=False, n_boot=100)
        >>> ev.entries  # the layer is chosen automatically: the ReLU's output
        ['gradcam@1', 'random']
    """
    methods = sorted(METHODS) if methods is None else list(methods)
    seeds = [int(s) for s in seeds]
    _check(model, x, methods, baselines, seeds)
    layers = default_layers(model, x, batch_size) if layers is None else list(layers)
    scoring = Scoring(steps, insertion_baseline, deletion_baseline, road_percentages, road_noise, batch_size)
    config = {"methods": methods, "layers": layers, "seeds": seeds, "baselines": list(baselines),
              **_config(x, scoring, sanity_images if sanity else 0, sanity_modes if sanity else ())}
    t0 = time.perf_counter()
    maps, explained = collect_maps(model, x, methods, layers, batch_size)
    timings = {"maps": time.perf_counter() - t0}
    entries = list(maps) + list(baselines)
    values, curves, fractions, percentages = _score_all(model, x, maps, entries, seeds, scoring, timings)
    sanity_out: dict[str, dict[str, dict[str, Any]]] = {}
    if sanity:
        t0 = time.perf_counter()
        sanity_out = run_sanity(model, x[:sanity_images], explained, layers, seeds, sanity_modes)
        timings["sanity"] = time.perf_counter() - t0
    return Evaluation(entries=entries, values=values, curves=curves, fractions=fractions, percentages=percentages,
                      sanity=sanity_out, config=config, timings=timings, n_boot=n_boot)
