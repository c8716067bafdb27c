"""Sanity checks by model randomization (Adebayo et al., NeurIPS 2018, arXiv:1810.03292)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camlens.core.capture import forward_hooks
from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec
from camlens.errors import InputError
from camlens.methods import get_method
from camlens.metrics._common import resolve_classes

__all__ = [
    "SanityResult",
    "layers_from_top",
    "randomized_models",
    "rank_average",
    "sanity_check",
    "spearman",
    "ssim",
]


def rank_average(v: Tensor) -> Tensor:
    """Ranks ``1..P`` along the last dim of ``(N, P)``, ties given their average rank (as scipy's 'average')."""
    n, p = v.shape
    sv, order = torch.sort(v, dim=1, stable=True)
    new = torch.ones_like(sv, dtype=torch.bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    group = new.long().cumsum(dim=1) - 1  # (n, p) group index per sorted position
    pos = torch.arange(1, p + 1, dtype=torch.float64, device=v.device).expand(n, p)
    total = torch.zeros(n, p, dtype=torch.float64, device=v.device).scatter_add_(1, group, pos)
    count = torch.zeros(n, p, dtype=torch.float64, device=v.device).scatter_add_(1, group, torch.ones_like(pos))
    avg_sorted = (total / count.clamp_min(1)).gather(1, group)
    return torch.empty_like(avg_sorted).scatter_(1, order, avg_sorted)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps: ``(N, ...)`` x ``(N, ...)`` -> ``(N,)``.

        rho = Pearson(rank(a), rank(b)),  ties ranked by their average

    A constant map has no ranking; its correlation is NaN (reported, never hidden).
    """
    if a.shape != b.shape:
        raise InputError(f"spearman needs maps of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra = rank_average(a.flatten(1))
    rb = rank_average(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    return ((ra * rb).sum(dim=1) / den).to(torch.float32)


def ssim(a: Tensor, b: Tensor, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of each pair of ``(N, H, W)`` maps (Wang et al., IEEE TIP 2004).

        SSIM(a, b) = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    with local means and (biased) covariances under a Gaussian window (size
    ``window``, ``sigma``), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``,
    averaged over the valid window positions. Returns ``(N,)``.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(f"ssim needs two (N, H, W) maps of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    h, w = a.shape[1:]
    win = min(window, h, w)
    if win % 2 == 0:
        win -= 1
    t = torch.arange(win, dtype=torch.float64, device=a.device) - win // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    a64, b64 = a.double(), b.double()

    def filt(z: Tensor) -> Tensor:  # the separable window over the valid positions: rows, then columns
        # (a 1-channel conv2d with the 2-D window took 1.2 s per call on 8 maps of 224x224 on the CPU)
        return z.unfold(-1, win, 1).matmul(g).unfold(-2, win, 1).matmul(g)

    mu_a, mu_b = filt(a64), filt(b64)
    saa = filt(a64 * a64) - mu_a**2
    sbb = filt(b64 * b64) - mu_b**2
    sab = filt(a64 * b64) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(dim=1).to(torch.float32)


def layers_from_top(model: nn.Module, x: Tensor) -> list[str]:
    """Names of the modules that own parameters, in reverse order of their first call on ``x`` (output first)."""
    owners = {n: m for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    seen: list[str] = []

    def make(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name not in seen:
                seen.append(name)

        return hook

    with forward_hooks((m, make(name)) for name, m in owners.items()), torch.no_grad():
        model(x)
    return seen[::-1]


def _randomize(module: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                p.normal_(0.0, 0.01, generator=None)


def randomized_models(
    model: nn.Module, order: list[str], mode: str = "cascading", seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Deep copies of ``model`` with layers re-initialized, from the top (the user's model is never touched).

    ``mode="cascading"``: the i-th copy has ``order[:i+1]`` re-initialized
    (each step adds the next layer down); ``"independent"``: the i-th copy has
    only ``order[i]`` re-initialized. Layers are reset with their own
    ``reset_parameters()`` (PyTorch's default initialization) under
    ``torch.manual_seed(seed + i)``, in a forked RNG.

    Yields:
        ``(layer name, randomized copy)``.
    """
    if mode not in ("cascading", "independent"):
        raise InputError(f"mode={mode!r} must be 'cascading' or 'independent'")
    modules = dict(model.named_modules())
    missing = [n for n in order if n not in modules]
    if missing:
        raise InputError(f"layers {missing} are not in {type(model).__name__}")
    cascade = copy.deepcopy(model) if mode == "cascading" else None
    for i, name in enumerate(order):
        current = cascade if cascade is not None else copy.deepcopy(model)
        _randomize(dict(current.named_modules())[name], seed + i)
        yield name, current


@dataclass
class SanityResult:
    """Similarity of original and randomized maps, per randomized layer (top first).

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        layers: the re-initialized layer at each step, ``L`` names.
        spearman: ``(L, N)`` rank correlation of the signed maps.
        spearman_abs: ``(L, N)`` rank correlation of the absolute maps.
        ssim: ``(L, N)`` SSIM of the maps min-max normalized to [0, 1].
    """

    mode: str
    layers: list[str]
    spearman: Tensor
    spearman_abs: Tensor
    ssim: Tensor


def _signed_maps(
    method: str, model: nn.Module, layer: LayerSpec, x: Tensor, classes: Tensor, batch_size: int
) -> Tensor:
    cls = get_method(method)
    # The signed, unnormalized maps where the method has these switches (a declared capability); else its defaults.
    explainer = cls(model, layer, relu=False, normalize=False) if cls.accepts_postprocess else cls(model, layer)
    return torch.cat([image_map(explainer(xc, cc).map.detach())
                      for xc, cc in zip(x.split(batch_size), classes.split(batch_size), strict=True)])  # fmt: skip


def image_map(m: Tensor) -> Tensor:
    """``(N, H, W)`` from a layer map ``(N, H, W)`` or an input-like map ``(N, C, H, W)`` (guided backprop).

    An input-like map is averaged over its channels (linear: it keeps the sign of signed maps and keeps
    min-max normalized maps in [0, 1]); for one channel this is a squeeze.
    """
    return m.mean(dim=1) if m.ndim == 4 else m


def _unit(m: Tensor) -> Tensor:
    from camlens.core.ops import minmax_normalize

    return minmax_normalize(m, start_dim=1)


def sanity_check(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    target: TargetSpec = None,
    *,
    mode: str = "cascading",
    layers: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> SanityResult:
    """Model-randomization test: how similar are a method's maps before and after destroying the weights?

    Adebayo et al. 2018, Sec. 3.1: re-initialize the model's layers from the
    top (the logits) down, cumulatively ("cascading") or one at a time
    ("independent"), explain the same class with the same method, and compare
    the maps with the originals:

        rho     = Spearman(M, M_rand)           (signed maps)
        rho_abs = Spearman(|M|, |M_rand|)
        SSIM(norm(M), norm(M_rand))             (each min-max normalized to [0, 1])

    A method that depends on the model should lose similarity as soon as the
    top layer is randomized. Maps are taken with ``relu=False,
    normalize=False`` (signed, upsampled) where the method has these switches,
    so that the sign can change; the explained class is the original model's
    prediction (or ``target``). The user's model is deep-copied, never changed.

    Args:
        model: the classifier.
        x: ``(N, C, H, W)`` images.
        method: a name in :data:`camlens.METHODS`.
        layer: the layer the method explains.
        mode: ``"cascading"`` or ``"independent"``.
        layers: layers to randomize, top first; default :func:`layers_from_top`.
        seed: seeds the re-initialization.
        batch_size: images per explainer call (the maps do not depend on it).

    Returns:
        A :class:`SanityResult`.
    """
    classes = resolve_classes(model, x, target, batch_size=batch_size)
    order = layers_from_top(model, x[:1]) if layers is None else list(layers)
    original = _signed_maps(method, model, layer, x, classes, batch_size)
    rho, rho_abs, sim, names = [], [], [], []
    for name, rand_model in randomized_models(model, order, mode, seed):
        maps = _signed_maps(method, rand_model, layer, x, classes, batch_size)
        names.append(name)
        rho.append(spearman(original, maps))
        rho_abs.append(spearman(original.abs(), maps.abs()))
        sim.append(ssim(_unit(original), _unit(maps)))
    return SanityResult(mode, names, torch.stack(rho), torch.stack(rho_abs), torch.stack(sim))
