"""Deep Feature Factorization (Collins et al., ECCV 2018, arXiv:1806.10206): concept maps by NMF of a layer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec, resolve_layers
from camlens.core.ops import minmax_normalize, upsample
from camlens.core.targets import target_scores
from camlens.errors import InputError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, CAMResult
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DFFResult", "DeepFeatureFactorization", "nmf"]

OFFSETS = ("negative", "min")


def nmf(v: Tensor, k: int, iterations: int = 200, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Non-negative factorization ``V ~ W H`` of each matrix in a batch, by multiplicative updates.

    Lee & Seung's updates for the Frobenius norm, W then H in each of
    ``iterations`` rounds (no early stop, so the result does not depend on
    the other matrices of the batch):

        W <- W * (V H^T) / (W H H^T),   H <- H * (W^T V) / (W^T W H)

    A zero denominator becomes float32's eps (as scikit-learn's ``mu``
    solver does). Initialization as scikit-learn's ``init="random"``:
    ``|z| * sqrt(mean(V) / k)``, ``z`` standard normal from ``seed`` (drawn on
    the CPU; the same for every matrix of the batch).

    Args:
        v: ``(B, C, P)`` non-negative.
        k: the rank (number of concepts).

    Returns:
        ``W`` ``(B, C, k)`` and ``H`` ``(B, k, P)``.
    """
    c, p = v.shape[1:]
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(c, k, generator=gen, dtype=torch.float64).abs()
    h0 = torch.randn(k, p, generator=gen, dtype=torch.float64).abs()
    scale = (v.flatten(1).mean(dim=1).clamp_min(0) / k).sqrt()[:, None, None]  # (B, 1, 1)
    w = w0.to(v) * scale
    h = h0.to(v) * scale
    eps = torch.finfo(torch.float32).eps

    def safe(d: Tensor) -> Tensor:
        return torch.where(d == 0, torch.full_like(d, eps), d)

    for _ in range(iterations):
        ht = h.transpose(1, 2)
        w = w * (v @ ht) / safe(w @ (h @ ht))
        wt = w.transpose(1, 2)
        h = h * (wt @ v) / safe((wt @ w) @ h)
    return w, h


@dataclass
class DFFResult(CAMResult):
    """A :class:`CAMResult` with the concepts of Deep Feature Factorization, per layer.

    Attributes (besides :class:`CAMResult`'s; ``M`` concepts per image):
        concepts: layer -> concept maps ``(N, M, H, W)``, each upsampled and
            min-max normalized like ``maps`` (``(N, M, h, w)`` without upsampling).
        concepts_raw: layer -> the factor ``H`` as maps at layer resolution ``(N, M, h, w)``.
        concept_vectors: layer -> the factor ``W`` (plus the channel offset),
            one ``C``-vector per concept ``(N, M, C)``.
        concept_scores: layer -> the classifier's logits of each concept
            vector ``(N, M, classes)``; ``None`` without a classifier.
        chosen: layer -> the concept shown in ``maps`` for each target ``(N, K)``
            (K = 1 for one target per image).
    """

    concepts: dict[str, Tensor] = field(default_factory=dict)
    concepts_raw: dict[str, Tensor] = field(default_factory=dict)
    concept_vectors: dict[str, Tensor] = field(default_factory=dict)
    concept_scores: dict[str, Tensor] | None = None
    chosen: dict[str, Tensor] = field(default_factory=dict)


@register("dff")
class DeepFeatureFactorization(BaseCAM):
    """Deep Feature Factorization: ``M`` concept maps per image from an NMF of the layer's activations.

    The activations of one image, ``V`` ``(C, h*w)`` (made non-negative by a
    per-channel offset, see ``offset``), are factorized ``V ~ W H`` with
    ``W`` ``(C, M)`` >= 0 (each column a concept in feature space) and ``H``
    ``(M, h*w)`` >= 0 (where each concept is); row ``m`` of ``H`` is concept
    ``m``'s map (:func:`nmf`). Given a ``classifier`` (the model's linear
    head, or any callable ``(M, C) -> (M, classes)``), each concept vector
    (``W`` column plus the offset) gets class logits, as in
    pytorch-grad-cam's ``DeepFeatureFactorization``.

    The result is a :class:`DFFResult`: every concept's map and vector and
    scores, and, to serve like any method, ``maps`` holding for each target
    the map of one concept: the concept the classifier scores highest for
    that target (``classes`` or a callable target applied to the concept
    logits), or, without a classifier, the concept carrying the most of the
    activations (largest ``|W_m| |H_m|``), the same for every target.
    No gradients.

    Conventions: the paper factorizes a *set* of images jointly (shared
    concepts; ``shared=True``, as pytorch-grad-cam factorizes its whole
    batch); by default each image is factorized alone, so its concepts do
    not depend on the batch. The paper's ReLU features need no offset;
    channels with negative values are shifted up to 0 (``offset="negative"``),
    while pytorch-grad-cam subtracts every channel's minimum
    (``offset="min"``). pytorch-grad-cam runs scikit-learn's coordinate
    descent with a tolerance; here the multiplicative updates run a fixed
    ``iterations`` (NMF has local optima: two solvers agree on the
    reconstruction quality, not on the concepts).

    Args:
        n_concepts: ``M``.
        classifier: a layer name or module (e.g. ``"fc"``) or a callable on concept vectors.
        shared: factorize the batch jointly (one set of concepts for all images).
        offset: ``"negative"`` or ``"min"`` (see above).
        iterations: multiplicative-update rounds.
        seed: the initialization seed.
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, concepts ``(N, M, *s)``, vectors ``(N, M, C)``.
    """

    uses_gradients = False
    accepts_eigen_smooth = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        n_concepts: int = 5,
        classifier: LayerSpec | Callable[[Tensor], Tensor] | None = None,
        shared: bool = False,
        offset: str = "negative",
        iterations: int = 200,
        seed: int = 0,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        for key, value in (("n_concepts", n_concepts), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{key}={value!r} must be a positive int")
        if offset not in OFFSETS:
            raise InputError(f"offset={offset!r} must be one of {OFFSETS}")
        if isinstance(classifier, str):
            classifier = next(iter(resolve_layers(self.model, classifier).values()))
        if classifier is not None and not callable(classifier):
            raise InputError(f"classifier={classifier!r} must be a layer name, a module or a callable")
        self.n_concepts, self.iterations, self.seed = n_concepts, iterations, seed
        self.classifier = classifier
        self.shared, self.offset = bool(shared), offset

    def factorize(self, acts: Tensor) -> tuple[Tensor, Tensor]:
        """Concept vectors ``(N, M, C)`` (offset added back) and maps ``(N, M, *s)`` of activations ``(N, C, *s)``."""
        n, c, spatial = acts.shape[0], acts.shape[1], acts.shape[2:]
        v = acts.flatten(2)  # (N, C, P)
        if self.shared:
            v = v.transpose(0, 1).reshape(1, c, -1)  # (1, C, N * P)
        low = v.amin(dim=2, keepdim=True)  # (B, C, 1)
        shift = low if self.offset == "min" else low.clamp_max(0)
        w, h = nmf(v - shift, self.n_concepts, self.iterations, self.seed)
        vectors = (w + shift).transpose(1, 2)  # (B, M, C)
        if self.shared:
            h = h.reshape(self.n_concepts, n, -1).transpose(0, 1)  # (N, M, P)
            vectors = vectors.expand(n, -1, -1)
        return vectors, h.unflatten(2, spatial)

    def _concepts(self, acts: Tensor, ctx: CAMContext) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        vectors, maps = self.factorize(acts.double() if acts.dtype == torch.float64 else acts.float())
        n, m = maps.shape[:2]
        logits = None
        if self.classifier is not None:
            with torch.no_grad():
                first = next(self.classifier.parameters(), None) if isinstance(self.classifier, nn.Module) else None
                dtype = acts.dtype if first is None else first.dtype  # a half-precision head gets half vectors
                logits = self.classifier(vectors.flatten(0, 1).to(dtype)).unflatten(0, (n, m)).to(vectors.dtype)
        if logits is None:
            energy = vectors.norm(dim=2) * maps.flatten(2).norm(dim=2)  # (N, M)
            chosen = energy.argmax(dim=1, keepdim=True).expand(-1, ctx.scores.shape[1])
        elif ctx.classes is not None:
            chosen = logits.gather(2, ctx.classes.unsqueeze(1).expand(-1, m, -1)).argmax(dim=1)  # (N, K)
        else:
            per = target_scores(logits.flatten(0, 1), ctx.target, None)[0]  # (N * M, K)
            chosen = per.unflatten(0, (n, m)).argmax(dim=1)
        return vectors, maps, logits, chosen

    def _maps(self, ctx: CAMContext) -> CAMResult:
        with torch.no_grad(), torch.autocast(ctx.x.device.type, enabled=False):
            found = {name: self._concepts(a, ctx) for name, a in ctx.activations.items()}
            raw = {}
            for name, (_, maps, _, chosen) in found.items():
                idx = chosen[(...,) + (None,) * (maps.ndim - 2)].expand(-1, -1, *maps.shape[2:])
                raw[name] = maps.gather(1, idx)
            result = self._postprocess(raw, ctx)
            concepts = {}
            for name, (_, maps, _, _) in found.items():
                up = upsample(maps, ctx.x.shape[2:]) if self.upsample else maps
                concepts[name] = minmax_normalize(up) if self.normalize else up
        scores = None if self.classifier is None else {n: f[2] for n, f in found.items() if f[2] is not None}
        return DFFResult(
            **vars(result),
            concepts=concepts,
            concepts_raw={n: f[1] for n, f in found.items()},
            concept_vectors={n: f[0] for n, f in found.items()},
            concept_scores=scores,
            chosen={n: f[3] for n, f in found.items()},
        )
