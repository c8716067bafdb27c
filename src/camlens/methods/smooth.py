"""Averaging wrappers: noise averaging (SmoothGrad-style, Smilkov et al. 2017) and test-time augmentation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec, select_output, target_scores
from camlens.errors import InputError
from camlens.methods._sampling import check_n_samples, seeded_normal
from camlens.methods.base import BaseCAM, CAMContext, CAMResult
from camlens.methods.registry import get_method, register

__all__ = ["TRANSFORMS", "NoiseSmooth", "TTASmooth"]

Transform = Callable[[Tensor], Tensor]
TransformSpec = str | tuple[Transform, Transform]

#: built-in test-time transforms by name: each is its own inverse on images and maps.
TRANSFORMS: dict[str, Transform] = {
    "identity": lambda t: t,
    "hflip": lambda t: t.flip(-1),
    "vflip": lambda t: t.flip(-2),
    "hvflip": lambda t: t.flip(-1, -2),
}


class _Averaged(BaseCAM):
    """Runs an inner method on T modified copies of every image in one batch and averages the maps.

    The pipeline is :class:`BaseCAM`'s: the capture step is one clean forward
    pass (the targets to explain), the maps step runs the inner method on the
    copies and averages its post-processed maps. The capability attributes are
    those of the default inner method (Grad-CAM); ``self.inner`` is the one used.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        method: str | type[BaseCAM] = "gradcam",
        batch_size: int | None = None,
        **method_kwargs: Any,
    ) -> None:
        cls = get_method(method) if isinstance(method, str) else method
        if not (isinstance(cls, type) and issubclass(cls, BaseCAM)):
            raise InputError(f"method={method!r} must be a registered method name or a BaseCAM subclass")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise InputError(f"batch_size={batch_size!r} must be a positive int (images per inner call) or None")
        self.inner = inner = cls(model, layers, **method_kwargs)
        # The wrapper's own settings are the inner method's (the inner one post-processes the maps).
        super().__init__(
            model,
            None,
            relu=inner.relu,
            upsample=inner.upsample,
            normalize=inner.normalize,
            fuse=inner.fuse,
            reshape=inner.reshape,
            output=inner.output,
        )
        self.layers = inner.layers
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def _copies(self, x: Tensor) -> Tensor:
        """``(N * T, *x.shape[1:])``: T copies per image, image-major."""
        raise NotImplementedError

    def _undo(self, maps: Tensor) -> Tensor:
        """Undo the copies' transforms on ``(N, T, K, ...)`` maps."""
        return maps

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        """The clean forward pass: the targets the copies are explained for."""
        with torch.no_grad():
            logits = select_output(self.model(x), self.output)
            scores, classes, multi = target_scores(logits, target, top_k)
        return CAMContext(self.model, x, logits.detach(), scores.detach(), classes, {}, None, target, multi)

    def _maps(self, ctx: CAMContext) -> CAMResult:
        """The inner method's maps of the copies, averaged per image, with their K axis."""
        n, copies = ctx.x.shape[0], self._copies(ctx.x)
        t = copies.shape[0] // n
        inner_target = ctx.classes.repeat_interleave(t, 0) if ctx.classes is not None else ctx.target
        step = copies.shape[0] if self.batch_size is None else self.batch_size
        parts: list[CAMResult] = []
        for start in range(0, copies.shape[0], step):
            sub = inner_target[start : start + step] if isinstance(inner_target, Tensor) else inner_target
            parts.append(self.inner(copies[start : start + step], sub))
        self.layers = self.inner.layers  # chosen on the first call when layers=None
        # Class targets reach the inner method as (N * T, K): its maps keep their K axis;
        # a callable target with (N,) scores loses it there, and gets it back here.
        k_axis = (lambda m: m) if ctx.multi or ctx.classes is not None else (lambda m: m.unsqueeze(1))

        def average(pieces: list[Tensor]) -> Tensor:
            full = k_axis(torch.cat(pieces, dim=0))  # (N * T, K, ...)
            return self._undo(full.view(n, t, *full.shape[1:])).mean(dim=1)

        fused = [p.fused for p in parts if p.fused is not None]
        return CAMResult(
            maps={m: average([p.maps[m] for p in parts]) for m in parts[0].maps},
            raw={m: average([p.raw[m] for p in parts]) for m in parts[0].raw},
            targets=ctx.classes,
            scores=ctx.scores,
            logits=ctx.logits,
            fused=average(fused) if fused else None,
        )


@register("smooth-noise")
class NoiseSmooth(_Averaged):
    """Noise averaging (SmoothGrad-style): the mean map over Gaussian-noised copies of each image.

        M(x) = 1/T sum_t M(x + eps_t),   eps_t ~ N(0, (sigma * (max x - min x))^2)

    The T copies of all N images run through the inner method as one batch
    (or chunks of ``batch_size``), explaining the *clean* image's targets.
    The noise is drawn once from ``seed`` and shared by all images, so a map
    does not depend on the rest of the batch. The inner method's maps
    (post-processed, e.g. normalized) are averaged, and so are its raw maps.

    Args:
        method: the inner method's registered name or class (default ``"gradcam"``).
        n_samples: T, noisy copies per image.
        sigma: noise standard deviation relative to each image's value range.
        seed: the noise seed.
        batch_size: copies per inner call (``None``: all ``N * T`` at once).
        **method_kwargs: passed to the inner method (``relu=``, ``weighting=``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        method: str | type[BaseCAM] = "gradcam",
        n_samples: int = 8,
        sigma: float = 0.15,
        seed: int = 0,
        batch_size: int | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(model, layers, method=method, batch_size=batch_size, **method_kwargs)
        check_n_samples(n_samples, "noisy copies per image")
        if not sigma >= 0:
            raise InputError(f"sigma={sigma!r} must be >= 0 (a fraction of each image's value range, e.g. 0.15)")
        self.n_samples = n_samples
        self.sigma = float(sigma)
        self.seed = seed

    def noise(self, x: Tensor) -> Tensor:
        """The T unit-variance noise tensors ``(T, *x.shape[1:])`` (the same for every image)."""
        shape = (self.n_samples, *x.shape[1:])  # unit draws in float32, as before: seeds keep their maps
        return seeded_normal(shape, self.seed, 1.0, device=x.device, dtype=x.dtype, draw_dtype=torch.float32)

    def _copies(self, x: Tensor) -> Tensor:
        flat = x.detach().flatten(1)
        scale = self.sigma * (flat.amax(dim=1) - flat.amin(dim=1))  # (N,)
        scale = scale.view(-1, 1, *([1] * (x.ndim - 1)))
        return (x.detach().unsqueeze(1) + scale * self.noise(x).unsqueeze(0)).flatten(0, 1)


@register("smooth-tta")
class TTASmooth(_Averaged):
    """Test-time augmentation averaging: the mean over transformed copies, each map transformed back.

        M(x) = 1/T sum_t g_t^{-1}(M(g_t(x)))

    All ``N * T`` copies run through the inner method as one batch (or
    chunks of ``batch_size``), explaining the clean image's targets.

    Args:
        method: the inner method's registered name or class (default ``"gradcam"``).
        transforms: names from :data:`TRANSFORMS` (default ``("identity", "hflip")``)
            or ``(forward, inverse)`` pairs of callables on ``(B, C, *spatial)``
            images / maps that keep the spatial size.
        batch_size: copies per inner call (``None``: all at once).
        **method_kwargs: passed to the inner method.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        method: str | type[BaseCAM] = "gradcam",
        transforms: Sequence[TransformSpec] = ("identity", "hflip"),
        batch_size: int | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(model, layers, method=method, batch_size=batch_size, **method_kwargs)
        pairs: list[tuple[Transform, Transform]] = []
        for t in transforms:
            if isinstance(t, str):
                if t not in TRANSFORMS:
                    raise InputError(f"transform {t!r} is not one of {sorted(TRANSFORMS)} or a (forward, inverse) pair")
                pairs.append((TRANSFORMS[t], TRANSFORMS[t]))
            elif isinstance(t, tuple) and len(t) == 2 and all(callable(f) for f in t):
                pairs.append(t)
            else:
                raise InputError(
                    f"transform {t!r} must be a name from {sorted(TRANSFORMS)} or a (forward, inverse) pair"
                )
        if not pairs:
            raise InputError("transforms=() is empty; give at least one, e.g. ('identity', 'hflip')")
        self.transforms = pairs

    def _copies(self, x: Tensor) -> Tensor:
        return torch.stack([f(x.detach()) for f, _ in self.transforms], dim=1).flatten(0, 1)

    def _undo(self, maps: Tensor) -> Tensor:
        return torch.stack([inv(maps[:, i]) for i, (_, inv) in enumerate(self.transforms)], dim=1)
