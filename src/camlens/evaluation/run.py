"""Running an evaluation: collect the maps, score every entry for each seed, run the sanity checks.

:func:`evaluate` scores maps of registered methods (by name, from
:data:`camlens.METHODS`) at the given layers (the automatic choice,
:func:`camlens.core.autolayer.choose_layer`, by default), beside model-free
baselines (random, input intensity, Sobel edges), over several seeds, and
returns an :class:`~camlens.evaluation.result.Evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camlens._util.progress import progress_bar
from camlens.core.layers import resolve_layers
from camlens.core.wrapped import strip_wrapper_prefix, unwrap_model
from camlens.errors import CamlensError, InputError
from camlens.evaluation.extra import resolve_extra, score_extras
from camlens.evaluation.result import SANITY_STATS, Evaluation
from camlens.methods import METHODS, get_method, takes_chosen_layer
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
from camlens.metrics._runner import DEFAULT_BUDGET
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
    budget: int = DEFAULT_BUDGET


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
    FullGrad and guided backprop get ``layers=None`` (:func:`camlens.methods.takes_chosen_layer`): their one map
    is the input's, FullGrad's from every bias layer, as in their papers.
    """
    cls = get_method(method)
    explainer = cls(model, layers if takes_chosen_layer(cls) else None)
    out: dict[str, list[Tensor]] = {}
    for xc in x.split(batch_size):
        res = explainer(xc)
        for key, mp in res.maps.items():
            out.setdefault(key, []).append(image_map(mp.detach()))
    return {key: torch.cat(v) for key, v in out.items()}


def _skip_reason(err: Exception) -> str:
    """The first line of a method's error, as the one line the verdict shows for a skipped method."""
    text = str(err.args[0]) if err.args else type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def collect_maps(
    model: nn.Module, x: Tensor, methods: Sequence[str], layers: list[str], batch_size: int, *,
    skipped: list[tuple[str, str]] | None = None, progress: bool = False,
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """Every method's maps at every layer; a method that cannot apply to the model is skipped.

    Args:
        skipped: when given, a method whose construction or call raises a camlens error
            (CAM without a linear head, a callable target, ...) is appended as
            ``(method, one-line reason)`` and left out; when ``None`` the error propagates.
            A layer the model does not have raises :class:`~camlens.errors.LayerNotFoundError` first.
        progress: show a bar over the methods.

    Returns:
        ``({"method@key": (N, H, W)}, [(method, key), ...])`` in entry order,
        ``key`` a layer or ``"input"`` for an input-sized method.
    """
    # a layer the model does not have is the caller's mistake for every method: an error, not all skipped
    resolve_layers(unwrap_model(model), [strip_wrapper_prefix(n, model) for n in layers])
    maps: dict[str, Tensor] = {}
    explained: list[tuple[str, str]] = []
    bar = progress_bar(len(methods), "maps (methods)", enabled=progress)
    for m in methods:
        try:
            got = _method_maps(model, x, m, layers, batch_size)
        except CamlensError as err:
            if skipped is None:
                raise
            skipped.append((m, _skip_reason(err)))
            got = {}
        for key, mp in got.items():
            maps[f"{m}@{key}"] = mp
            explained.append((m, key))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return maps, explained


def score_seed(
    model: nn.Module, x: Tensor, maps: dict[str, Tensor], mask: Tensor | None, seed: int, scoring: Scoring,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Every metric of every map for one seed, for the predicted class.

    Args:
        maps: entry -> ``(N, H, W)`` map; mask: ``(N, H, W)`` object mask for the pointing game
            (``None``: no object is known and the pointing game is left out).
        progress: called with the number of images finished (see :func:`~camlens.metrics.batched.faithfulness`).

    Returns:
        ``(values, curves, fractions, percentages)``: entry -> metric -> ``(N,)``;
        entry -> curve name -> ``(N, steps+1)`` or ``(N, P)``; the curves' x-axes.
    """
    classes, scores = faithfulness(
        model, x, maps, seed=seed, steps=scoring.steps, deletion_baseline=scoring.deletion_baseline,
        insertion_baseline=scoring.insertion_baseline, percentages=scoring.road_percentages,
        noise=scoring.road_noise, batch_size=scoring.batch_size, budget=scoring.budget, progress=progress,
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
        }  # fmt: skip
        if mask is not None:
            values[e]["pointing"] = energy_pointing_game(maps[e], mask)
        curves[e] = {"deletion": dele.curves, "insertion": ins.curves, "road_morf": rd.morf, "road_lerf": rd.lerf}
    return values, curves, fr, qs


def run_sanity(
    model: nn.Module, x: Tensor, explained: list[tuple[str, str]], layers: list[str], seeds: list[int],
    modes: Sequence[str], *, batch_size: int = 512, progress: bool = False,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The randomization checks (Adebayo et al. 2018) of every explained ``(method, key)`` on ``x``.

    Returns:
        ``"method@key"`` -> mode -> ``{"layers": [...], stat: (S, L, N)}``.
    """
    order = layers_from_top(model, x[:1])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    bar = progress_bar(len(explained) * len(modes) * len(seeds), "sanity checks", enabled=progress)
    for m, where in explained:
        layer = where if where in layers else layers[0]  # an input-sized map ignores the layer
        for mode in modes:
            runs = []
            for s in seeds:
                runs.append(sanity_check(model, x, m, layer, mode=mode, layers=order, seed=s, batch_size=batch_size))
                if bar is not None:
                    bar.update(1)
            out.setdefault(f"{m}@{where}", {})[mode] = {
                "layers": runs[0].layers,
                **{s: torch.stack([getattr(r, s) for r in runs]).cpu() for s in SANITY_STATS},
            }
    if bar is not None:
        bar.close()
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


def resolve_objects(x: Tensor, objects: Tensor | str | None) -> tuple[Tensor | None, str]:
    """The object masks of the pointing game and how they were found.

    Args:
        objects: ``(N, H, W)`` bool masks; ``"nonzero"`` (the nonzero pixels, :func:`camlens.metrics.object_mask`);
            ``"auto"``: the nonzero pixels when every image has a background of exact zeros (a quarter of
            its pixels or more, as Fashion-MNIST), else none; ``None``: no object known, no pointing game.

    Returns:
        ``(mask or None, description)``.

    Raises:
        InputError: a mask of the wrong shape, or an unknown string.
    """
    if objects is None:
        return None, "none (no pointing game)"
    if isinstance(objects, Tensor):
        if objects.shape != (x.shape[0], *x.shape[2:]):
            raise InputError(f"objects must be (N, H, W) = {(x.shape[0], *x.shape[2:])} masks, "
                             f"got shape {tuple(objects.shape)}")  # fmt: skip
        return objects.to(device=x.device, dtype=torch.bool), "given masks"
    if objects == "nonzero":
        return object_mask(x), "the nonzero pixels"
    if objects == "auto":
        zero_share = (x.abs().sum(dim=1) == 0).flatten(1).double().mean(dim=1)
        if bool((zero_share >= 0.25).all()):
            return object_mask(x), "the nonzero pixels (a zero background was found)"
        return None, "none (no pointing game: no masks or boxes given and no zero background)"
    raise InputError(f"objects={objects!r} must be (N, H, W) masks, 'nonzero', 'auto' or None")


def _config(x: Tensor, scoring: Scoring, sanity_images: int, sanity_modes: Sequence[str]) -> dict[str, Any]:
    """The rest of an evaluation's recorded arguments, after methods, layers, seeds and baselines."""
    return {
        "n_images": int(x.shape[0]), "image_size": list(x.shape[1:]), "steps": scoring.steps,
        "insertion_baseline": scoring.insertion_baseline, "deletion_baseline": scoring.deletion_baseline,
        "road_percentages": [float(q) for q in scoring.road_percentages], "road_noise": scoring.road_noise,
        "sanity_images": min(sanity_images, int(x.shape[0])), "sanity_modes": list(sanity_modes),
        "target": "predicted class", "device": str(x.device),
    }  # fmt: skip


def _score_all(
    model: nn.Module, x: Tensor, maps: dict[str, Tensor], entries: list[str], seeds: list[int], scoring: Scoring,
    timings: dict[str, float], mask: Tensor | None = None, progress: bool = False,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Every seed's scores stacked ``(S, N)`` and the curves averaged over seeds and images; times in ``timings``."""
    t0 = time.perf_counter()
    values: dict[str, dict[str, list[Tensor]]] = {e: {} for e in entries}
    sums: dict[str, dict[str, Any]] = {}
    fractions = percentages = torch.empty(0)
    for seed in seeds:
        t_seed = time.perf_counter()
        seed_maps = {e: maps[e] if e in maps else BASELINES[e](x, seed) for e in entries}
        bar = progress_bar(x.shape[0], f"metrics, seed {seed} (images)", enabled=progress)
        tick = bar.update if bar is not None else None
        vals, curves, fractions, percentages = score_seed(model, x, seed_maps, mask, seed, scoring, tick)
        if bar is not None:
            bar.close()
        for e in entries:
            for k, t in vals[e].items():
                values[e].setdefault(k, []).append(t)
            acc = sums.setdefault(e, {})
            for k, t in curves[e].items():
                acc[k] = acc.get(k, 0) + t.double().mean(dim=0) / len(seeds)
        timings[f"metrics_seed{seed}"] = time.perf_counter() - t_seed
    timings["metrics"] = time.perf_counter() - t0
    stacked = {e: {k: torch.stack(v).cpu() for k, v in d.items()} for e, d in values.items()}
    means = {e: {k: t.float().cpu() for k, t in c.items()} for e, c in sums.items()}
    return stacked, means, fractions.cpu(), percentages.cpu()


def _forward_batch(x: Tensor, batch_size: int, budget: int) -> int:
    """Images per explainer call: ``batch_size``, fewer for large images (a backward pass keeps the activations)."""
    image_bytes = x[:1].numel() * x.element_size()
    return max(1, min(batch_size, budget // max(1, 64 * image_bytes)))


def _scoring(scoring: dict[str, Any]) -> Scoring:
    try:
        return Scoring(**scoring)
    except TypeError:
        raise InputError(
            f"evaluate() got unknown settings {sorted(scoring)}; the settings are the fields of "
            "camlens.evaluation.run.Scoring"
        ) from None


def evaluate(
    model: nn.Module,
    x: Tensor,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    baselines: Sequence[str] = tuple(BASELINES),
    objects: Tensor | str | None = "auto",
    sanity: bool = True,
    sanity_images: int = 100,
    sanity_modes: Sequence[str] = ("cascading", "independent"),
    n_boot: int = 2000,
    progress: bool = False,
    extra_metrics: Sequence[str] = (),
    **scoring: Any,
) -> Evaluation:
    """Score methods at layers, beside model-free baselines, on images ``x``.

    For each seed, every entry (``method@layer`` and each baseline) gets the
    deletion and insertion AUC, ROAD, Average Drop and Increase in
    Confidence, and, when an object is known (``objects``), the area-normalized
    energy pointing game, all for the class the model predicts. Seeds change the
    random map, the tie-breaking order of equal saliencies, the ROAD noise and
    the re-initialization of the sanity checks; the images stay the same, so
    intervals are bootstrapped over images (seeds averaged per image) and
    differences to the baselines are paired per image. A method that cannot
    apply to the model (CAM without a linear head, ...) is skipped, with its
    reason in ``config["skipped"]``; :meth:`Evaluation.verdict` says which method to use.
    ``extra_metrics`` adds opt-in metrics (:mod:`camlens.evaluation.extra`), not weighed by the verdict.

    Args:
        model: a classifier in eval mode (it is not changed).
        x: ``(N, C, H, W)`` images on the model's device.
        methods: names in :data:`camlens.METHODS` (default: all registered).
        layers: layer names (default: the automatic choice, :func:`default_layers`).
        seeds: one or more seeds.
        baselines: names in :data:`camlens.metrics.BASELINES`.
        objects: object masks for the pointing game (see :func:`resolve_objects`; default ``"auto"``).
        sanity, sanity_images, sanity_modes: run the randomization checks (``"cascading"`` and/or
            ``"independent"``) on the first ``sanity_images`` images.
        n_boot: bootstrap resamples; progress: show progress bars (maps, each seed's images, sanity checks).
        extra_metrics: names in :data:`camlens.metrics.OPT_IN_METRICS`, or ``["all"]``; the ones that call
            an explainer run on the first ``sanity_images`` images (also with ``sanity=False``).
        **scoring: the fields of :class:`Scoring`: ``steps`` (16), ``insertion_baseline`` ("blur"),
            ``deletion_baseline`` ("zero"), ``road_percentages``, ``road_noise`` (0.01), ``batch_size``
            (512, images per forward pass, fewer for large images) and ``budget`` (bytes of perturbed images
            held at once, 512 MiB; see :class:`camlens.metrics._runner.ProbeRunner`).

    Returns:
        An :class:`~camlens.evaluation.result.Evaluation`.

    Raises:
        InputError: a model in training mode, unknown methods, layers, baselines, extra metrics or settings,
            no seeds.
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
    extra = resolve_extra(extra_metrics)
    sc = _scoring(scoring)
    layers = default_layers(model, x, sc.batch_size) if layers is None else list(layers)
    mask, found = resolve_objects(x, objects)
    config = {"methods": methods, "layers": layers, "seeds": seeds, "baselines": list(baselines),
              "model_name": type(model).__name__, "objects": found,
              **_config(x, sc, sanity_images if sanity else 0, sanity_modes if sanity else ())}  # fmt: skip
    if extra:
        config.update(extra_metrics=extra, extra_images=min(sanity_images, int(x.shape[0])))
    return _run(model, x, methods, layers, seeds, list(baselines), sc, mask, config,
                (sanity_images, list(sanity_modes)) if sanity else None, n_boot, progress, extra)  # fmt: skip


def _run(
    model: nn.Module, x: Tensor, methods: list[str], layers: list[str], seeds: list[int], baselines: list[str],
    sc: Scoring, mask: Tensor | None, config: dict[str, Any], sanity: tuple[int, list[str]] | None, n_boot: int,
    progress: bool, extra: list[str],
) -> Evaluation:
    """The phases of :func:`evaluate` after its checks: maps, metrics per seed, sanity checks, opt-in metrics."""
    t0 = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    batch = _forward_batch(x, sc.batch_size, sc.budget)
    maps, explained = collect_maps(model, x, methods, layers, batch, skipped=skipped, progress=progress)
    config["skipped"] = skipped
    timings = {"maps": time.perf_counter() - t0}
    entries = list(maps) + baselines
    values, curves, fractions, percentages = _score_all(model, x, maps, entries, seeds, sc, timings, mask, progress)
    sanity_out: dict[str, dict[str, dict[str, Any]]] = {}
    if sanity is not None and explained:
        t0 = time.perf_counter()
        sanity_out = run_sanity(model, x[: sanity[0]], explained, layers, seeds, sanity[1], batch_size=batch,
                                progress=progress)  # fmt: skip
        timings["sanity"] = time.perf_counter() - t0
    extra_out: dict[str, dict[str, Tensor]] = {}
    if extra:
        t0 = time.perf_counter()
        extra_out = score_extras(model, x, maps, explained, layers, baselines, seeds, extra, mask, config,
                                 n_explain=config["extra_images"], batch_size=batch, progress=progress)  # fmt: skip
        timings["extra"] = time.perf_counter() - t0
    return Evaluation(entries=entries, values=values, curves=curves, fractions=fractions, percentages=percentages,
                      sanity=sanity_out, config=config, timings=timings, n_boot=n_boot, extra=extra_out)
