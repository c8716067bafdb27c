"""The engine every CAM method shares: capture -> weights -> combine -> post-process.

A method subclasses :class:`BaseCAM` and overrides :meth:`BaseCAM.weights`
(channel weights from activations and gradients) or, for methods that are
not a weighted sum of channels, :meth:`BaseCAM.layer_maps`. Methods that do
not explain a layer's activations (guided backpropagation, FullGrad) or that
wrap another method (smoothing) override one step of the fixed pipeline in
:meth:`BaseCAM.__call__` instead: ``_capture`` (the forward and backward
passes) or ``_maps`` (maps from what was captured); the post-processing and
the building of the result stay shared.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar, TypedDict

import torch
from torch import Tensor, nn

from camlens.core.capture import capture, target_gradients
from camlens.core.inputs import check_image_batch
from camlens.core.layers import LayerSpec, resolve_layers
from camlens.core.ops import FUSIONS, fuse, is_uniform, minmax_normalize, upsample
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.core.tokens import auto_reshape
from camlens.core.wrapped import check_not_compiled_inside, strip_wrapper_prefix, unwrap_model
from camlens.errors import InputError, LayerNotUsedError, LayerShapeError

__all__ = [
    "BaseCAM",
    "CAMContext",
    "CAMOptions",
    "CAMResult",
    "Reshape",
    "as_maps",
    "check_input",
    "combine",
    "eigen_combine",
    "layer_gradients",
]

Reshape = Callable[[Tensor], Tensor]


class CAMOptions(TypedDict, total=False):
    """The post-processing keywords every method takes (see :class:`BaseCAM`).

    A method with keywords of its own declares them and takes the rest as
    ``**options: Unpack[CAMOptions]``, so the list lives here once.
    """

    relu: bool
    upsample: bool
    normalize: bool
    fuse: str | None
    reshape: Reshape | Mapping[str, Reshape] | None
    output: OutputSpec
    eigen_smooth: bool


@dataclass
class CAMResult:
    """The maps of one call, per layer.

    Attributes:
        maps: layer name -> post-processed maps, ``(N, H, W)`` for one target
            per image or ``(N, K, H, W)`` for several (``top_k``, an (N, K)
            target, a callable returning (N, K)); upsampled to the input's
            spatial size and min-max normalized to [0, 1] unless switched off.
        raw: layer name -> maps at layer resolution, after the method's ReLU
            (if ``relu=True``) and before upsampling and normalization; same
            leading shape as ``maps``.
        targets: explained class indices, ``(N,)`` or ``(N, K)``; ``None`` for
            a callable target.
        scores: the explained (pre-softmax) scores, shaped like ``targets``.
        logits: the selected model output, detached.
        fused: the layers' maps fused (``fuse=`` given), shaped like one ``maps`` entry.
    """

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    targets: Tensor | None
    scores: Tensor
    logits: Tensor
    fused: Tensor | None = None

    @property
    def map(self) -> Tensor:
        """The single layer's maps (or the fused maps), for one-layer calls."""
        if self.fused is not None:
            return self.fused
        if len(self.maps) != 1:
            raise LayerShapeError(
                f"result.map is for one layer; this result has {list(self.maps)}: use result.maps[name]"
            )
        return next(iter(self.maps.values()))


@dataclass
class CAMContext:
    """Everything a method may use to make its maps: what one call captured.

    ``activations[name]`` is ``(N, C, *spatial)`` and detached;
    ``gradients[name]`` is ``(N, K, C, *spatial)``, the gradient of each of the
    K target scores (``None`` for gradient-free methods); ``classes`` is
    ``(N, K)`` or ``None``; ``target`` is the ``target`` the call was given (a
    callable target is needed to score new inputs); ``multi`` says whether the
    call asked for several targets per image (the result keeps its K axis);
    ``input_gradients`` is ``(N, K, C_in, *spatial)``, the gradient of each
    target score to the input, for the methods whose map lives at the input
    (``None`` otherwise).
    """

    model: nn.Module
    x: Tensor
    logits: Tensor
    scores: Tensor
    classes: Tensor | None
    activations: dict[str, Tensor]
    gradients: dict[str, Tensor] | None
    target: TargetSpec = None
    multi: bool = False
    input_gradients: Tensor | None = None


class BaseCAM:
    """A class-activation-map method bound to a model and one or more layers.

    Args:
        model: any ``nn.Module``; it is left exactly as found (mode, hooks,
            ``requires_grad``, ``.grad``).
        layers: a layer name as in ``model.named_modules()``, a submodule, or
            a list of either. All layers are computed in one forward pass and
            one backward pass. ``None``: chosen on the first call from a real
            forward pass on its input (:func:`camlens.core.autolayer.choose_layer`)
            and kept for later calls. A wrapped model (``DataParallel``,
            ``DistributedDataParallel``, ``torch.compile``) is explained
            through the real model inside (:mod:`camlens.core.wrapped`); names
            with the wrapper's ``module.`` / ``_orig_mod.`` prefix work too.
        relu: apply ReLU to the combined map (the paper's definition).
        upsample: resize maps to the input's spatial size ((bi/tri)linear).
        normalize: min-max normalize each map to [0, 1] (needs ``upsample``
            or not; a constant map becomes zeros, never NaN).
        fuse: combine the layers' maps into ``result.fused``: ``"mean"``,
            ``"max"`` or ``"product"`` (needs ``upsample=True`` when the
            layers differ in resolution).
        reshape: a function turning a layer's output into ``(N, C, *spatial)``
            (for token or channels-last layouts), or a dict of them by layer name.
            It is applied to activations and gradients alike. By default
            :func:`camlens.core.tokens.auto_reshape` reads ``(N, T, C)`` tokens and
            ``(N, h, w, C)`` channels-last outputs of image models.
        output: where the scores are in the model's output (see
            :func:`camlens.core.targets.select_output`).
        eigen_smooth: the first principal component of the weighted channels
            instead of their sum (:func:`eigen_combine`); refused by methods without ``accepts_eigen_smooth``.

    Capabilities, declared per class (see :class:`camlens.methods.protocol.Explainer`):
    ``uses_gradients`` (a backward pass is needed), ``input_sized`` (the map
    lives at the input's resolution, not a layer's), ``accepts_reshape``
    (takes ``reshape=``), ``accepts_postprocess`` (takes ``relu=``,
    ``normalize=``, ``upsample=``), ``accepts_eigen_smooth``, ``families`` (:data:`~camlens.methods.protocol.FAMILIES`).

    Threads: one method object, and one model, may be used from several
    threads at once, and each call returns what it would return alone. All
    per-call state lives in the call: the hooks of a call act only in the
    calling thread (:mod:`camlens.core.capture`), so another thread's forward
    pass through the same layers is neither recorded nor changed, and a
    method's caches (Score-CAM's inference copy) are checked and rebuilt under
    a lock and handed to each call. Attributes that report on "the last call"
    (``AblationCAM.rerun_used``) are shared and say what the latest call in
    any thread did. The model must not be changed (trained, moved) meanwhile,
    and its ``forward`` must run its layers in the calling thread.
    """

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    input_sized: ClassVar[bool] = False
    accepts_reshape: ClassVar[bool] = True
    accepts_postprocess: ClassVar[bool] = True
    accepts_eigen_smooth: ClassVar[bool] = True
    families: ClassVar[tuple[str, ...]] = ("cnn", "vit", "swin", "detection", "segmentation")

    def __init_subclass__(cls, **kwargs: object) -> None:  # own layer_maps: eigen_smooth only if declared
        super().__init_subclass__(**kwargs)
        cls.accepts_eigen_smooth = vars(cls).get("accepts_eigen_smooth", cls.layer_maps is BaseCAM.layer_maps)

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        relu: bool = True,
        upsample: bool = True,
        normalize: bool = True,
        fuse: str | None = None,
        reshape: Reshape | Mapping[str, Reshape] | None = None,
        output: OutputSpec = None,
        eigen_smooth: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if fuse is not None and fuse not in FUSIONS:
            raise InputError(f"fuse={fuse!r} is not one of {sorted(FUSIONS)} (or None)")
        _check_eigen_smooth(type(self), eigen_smooth)
        # DataParallel / DDP / torch.compile: hook the real model (camlens.core.wrapped).
        self.wrapped = model
        self.model = model = unwrap_model(model)
        self.layers: dict[str, nn.Module] = {}
        if layers is not None:
            if isinstance(layers, str):
                layers = strip_wrapper_prefix(layers, self.wrapped)
            elif isinstance(layers, Iterable) and not isinstance(layers, nn.Module):
                layers = [strip_wrapper_prefix(s, self.wrapped) if isinstance(s, str) else s for s in layers]
            self.layers = resolve_layers(model, layers)
            check_not_compiled_inside(model, self.layers)
        self.relu = relu
        self.upsample = upsample
        self.normalize = normalize
        self.fuse = fuse
        self.reshape = reshape
        self.output = output
        self.eigen_smooth = bool(eigen_smooth)

    def __repr__(self) -> str:
        layers = list(self.layers) or "auto"
        return f"{type(self).__name__}(model={type(self.model).__name__}, layers={layers})"

    # ---- the method-specific part -------------------------------------------------

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Channel weights ``(N, K, C)`` (or element-wise ``(N, K, C, *spatial)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement weights() or layer_maps()")

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        """Maps ``(N, K, *spatial)`` per layer, before ReLU; default: sum_c w_c A^c."""
        out = {}
        for name, acts in ctx.activations.items():
            assert ctx.gradients is not None
            out[name] = self._combine(self.weights(acts, ctx.gradients[name]), acts)
        return out

    def _combine(self, weights: Tensor, activations: Tensor) -> Tensor:
        """:func:`combine`, or :func:`eigen_combine` with ``eigen_smooth=True``: the maps ``(N, K, *s)``."""
        return (eigen_combine if self.eigen_smooth else combine)(weights, activations)

    # ---- the shared pipeline: check -> capture -> maps -> post-process -> result -----

    def __call__(self, x: Tensor, target: TargetSpec = None, *, top_k: int | None = None) -> CAMResult:
        """Explain ``x`` (a batch ``(N, C, *spatial)``) for ``target`` or the ``top_k`` classes.

        See :func:`camlens.core.targets.target_scores` for the forms of ``target``.
        """
        check_input(self.model, x)
        with torch.inference_mode(False):
            ctx = self._capture(x, target, top_k)
            result = self._maps(ctx)
        return result if ctx.multi else _one_target(result)

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        """The forward pass with the layers hooked and (for gradient methods) the one backward pass."""
        if not self.layers:
            from camlens.core.autolayer import choose_layer

            self.layers = resolve_layers(self.model, choose_layer(self.model, x, target, output=self.output))
        logits, acts, scores, classes, multi = self._forward(x, target, top_k)
        grads = layer_gradients(scores, acts) if self.uses_gradients else None
        activations = {n: self._as_maps(n, a.detach(), x) for n, a in acts.items()}
        gradients = None if grads is None else {n: self._as_maps(n, g, x, batched=True) for n, g in grads.items()}
        warn_if_flat(activations, gradients or {})
        return CAMContext(
            self.model, x, logits.detach(), scores.detach(), classes, activations, gradients, target, multi
        )

    def _forward(self, x: Tensor, target: TargetSpec, top_k: int | None):
        for lazy in (True, False):
            with capture(self.model, self.layers, lazy=lazy) as cap:
                output = self.model(x)
                logits = select_output(output, self.output)
                scores, classes, multi = target_scores(logits, target, top_k)
            missing = [n for n in self.layers if n not in cap.activations]
            if missing:
                raise LayerNotUsedError(
                    f"layer(s) {missing} of {type(self.model).__name__} were not called in the forward pass; "
                    "choose layers the model uses for this input"
                )
            if scores.requires_grad or not self.uses_gradients:
                return logits, cap.activations, scores, classes, multi
            # The graph did not survive lazy recording (e.g. a wrapper gathered the
            # outputs with autograd off): run once more with autograd on throughout.
        raise LayerNotUsedError(
            f"the target scores do not depend on layer(s) {list(self.layers)}; "
            "pick layers that lie on the path to the explained output"
        )

    def _as_maps(self, name: str, t: Tensor, x: Tensor, batched: bool = False) -> Tensor:
        """A captured tensor as ``(N, C, *spatial)`` (``(N, K, C, *spatial)`` when ``batched``)."""
        fn = self.reshape.get(name) if isinstance(self.reshape, Mapping) else self.reshape
        return as_maps(name, t, x, fn, batched)

    def _maps(self, ctx: CAMContext) -> CAMResult:
        """The post-processed maps of ``ctx``, with their K axis (the pipeline drops it for one target)."""
        # Mixed precision: the model ran under the caller's autocast; the maps are
        # combined, resized and normalized in float32 (captured half tensors are upcast).
        with torch.no_grad(), torch.autocast(ctx.x.device.type, enabled=False):
            return self._postprocess(self.layer_maps(ctx), ctx)

    def _rectify(self, m: Tensor) -> Tensor:
        """The method's ReLU (``relu=``) on a map from :meth:`layer_maps`; ``raw`` holds what it returns."""
        return torch.relu(m) if self.relu else m

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        """ReLU, upsample (layer maps only), normalize and fuse ``(N, K, ...)`` maps."""
        raw = {name: self._rectify(m) for name, m in raw.items()}
        maps: dict[str, Tensor] = {}
        for name, m in raw.items():
            if self.upsample and not self.input_sized:
                m = upsample(m, ctx.x.shape[2:])
            maps[name] = minmax_normalize(m) if self.normalize else m
        fused = None
        if self.fuse is not None:
            shapes = {tuple(m.shape) for m in maps.values()}
            if len(shapes) > 1:
                raise LayerShapeError(f"cannot fuse maps of shapes {sorted(shapes)}; use upsample=True")
            fused = fuse(list(maps.values()), self.fuse)
        return CAMResult(maps, raw, ctx.classes, ctx.scores, ctx.logits, fused)


def layer_gradients(scores: Tensor, acts: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Gradients ``(N, K, *shape[1:])`` of the K target scores to each captured layer output, by name.

    Raises:
        LayerNotUsedError: the scores do not depend on some of the layers.
    """
    grads = dict(zip(acts, target_gradients(scores, list(acts.values())), strict=True))
    unused = [n for n, g in grads.items() if g is None]
    if unused:
        raise LayerNotUsedError(
            f"the target scores do not depend on layer(s) {unused}; "
            "pick layers that lie on the path to the explained output"
        )
    return {n: g for n, g in grads.items() if g is not None}


def warn_if_flat(activations: Mapping[str, Tensor], gradients: Mapping[str, Tensor]) -> None:
    """Warn about a layer whose maps cannot vary: the same value at every position (see below) or zero gradients."""
    warn_if_uniform(activations)
    warn_if_zero_gradients(gradients)


def warn_if_uniform(activations: Mapping[str, Tensor]) -> None:
    """Warn about a layer whose maps ``(N, C, *s)``, in every channel of every image, hold one value at every position.

    Every CAM there is flat: an adaptive pooling repeating a 1x1 map (AlexNet's ``avgpool`` on a 64x64 input,
    VGG's on a 32x32 one). The automatic layer choice skips such layers.
    """
    for name, a in activations.items():
        if a.ndim < 3 or a[0, 0].numel() < 2:
            continue
        if is_uniform(a) and bool(torch.isfinite(a.flatten(2)[:, :, 0]).all()):
            warnings.warn(
                f"layer {name!r} holds one value at every position of its {tuple(a.shape[2:])} maps, in every "
                "channel of every image, so every map there is flat (as where an adaptive pooling repeats the 1x1 "
                "map of convolutions that end in 1x1): explain an earlier layer with a real grid (layers=None "
                "chooses one), or give a larger input",
                stacklevel=5,
            )


def warn_if_zero_gradients(gradients: Mapping[str, Tensor]) -> None:
    """Warn about a layer whose gradient maps ``(N, K, C, *s)`` are zero at every position for an image.

    Its gradient maps are then empty: a ViT's last block (a class-token head reads none of its patch
    tokens), or a head that is all zeros.
    """
    for name, g in gradients.items():
        if g.numel() == 0:
            continue
        zero = g.flatten(1).abs().amax(dim=1) == 0
        if bool(zero.any()):
            warnings.warn(
                f"the target score's gradient at layer {name!r} is zero at every position for image(s) "
                f"{zero.nonzero().flatten().tolist()[:10]}, so every gradient method's map there is empty: the "
                "score does not read this layer's positions (a ViT's last block: its patch tokens are not read by "
                "a class-token head; explain the input of the last block) or the head is all zeros",
                stacklevel=5,
            )


def check_input(model: nn.Module, x: Tensor) -> None:
    """Refuse an ``x`` that cannot be explained by ``model`` as given.

    Raises:
        InputError: ``x`` is not a tensor, is an inference tensor, is on
            another device than ``model``, either of them is on the meta device
            (shapes without data), does not fit the model's first convolution
            (:func:`camlens.core.inputs.check_image_batch`), or some images hold
            NaN or infinite values (named by their index in the batch).
    """
    if not isinstance(x, Tensor):
        raise InputError(f"x must be a torch.Tensor batch (N, C, H, W), got {type(x).__name__}")
    if x.is_inference():
        raise InputError(
            "x is an inference tensor (made under torch.inference_mode()), which autograd cannot use; "
            "make it outside inference_mode, or pass x.clone() called outside it"
        )
    ref: Tensor | None = next(model.parameters(), None)
    if ref is None:
        ref = next(model.buffers(), None)
    if ref is not None and ref.device.type == "meta":
        raise InputError(
            f"{type(model).__name__} is on the meta device: its weights have shapes but no values, "
            "so there is nothing to explain; load real weights first, e.g. "
            "model.to_empty(device='cpu') followed by model.load_state_dict(...)"
        )
    if x.device.type == "meta":
        raise InputError("x is on the meta device (a shape without values); pass a batch of real images")
    if ref is not None and ref.device != x.device:
        raise InputError(
            f"x is on {x.device} but {type(model).__name__} is on {ref.device}; "
            f"move one of them, e.g. x.to({str(ref.device)!r})"
        )
    _check_finite(x)
    check_image_batch(model, x)  # integer pixels, no batch dimension, grayscale or channels-last images


def _check_finite(x: Tensor) -> None:
    """Refuse a floating-point ``x`` holding NaN or infinite values, naming the images that do."""
    if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
        return
    # A finite sum proves every value finite (NaN and inf propagate), in one reduction that allocates
    # nothing; only a non-finite sum (a bad value, or an overflowing sum) pays for the exact check.
    if bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all()):
        return
    bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
    raise InputError(
        f"x holds NaN or infinite values in image(s) {shown} of the batch of {x.shape[0]}; "
        "every map would be NaN or meaningless: drop or repair those images (torch.isfinite(x) finds them)"
    )


def as_maps(name: str, t: Tensor, x: Tensor, reshape: Reshape | None, batched: bool = False) -> Tensor:
    """Layer ``name``'s captured tensor as ``(N, C, *spatial)`` (``(N, K, C, *spatial)`` when ``batched``).

    ``reshape`` turns the layer's output into that layout; ``None``: token
    ``(N, T, C)`` and channels-last ``(N, h, w, C)`` layers are read by
    :func:`camlens.core.tokens.auto_reshape`. Half tensors are upcast to float32.

    Raises:
        LayerShapeError: the result is not ``(N, C, *spatial)`` with the input's spatial rank.
    """
    fn = reshape if reshape is not None else partial(auto_reshape, input_shape=tuple(x.shape))
    if batched:
        n, k = t.shape[:2]
        t = fn(t.flatten(0, 1)).unflatten(0, (n, k))
    else:
        t = fn(t)
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    lead = 2 if batched else 1
    if t.ndim - lead - 1 != x.ndim - 2 or t.ndim - lead - 1 < 1:
        shape = tuple(t.shape[1:] if batched else t.shape)
        raise LayerShapeError(
            f"layer {name!r} outputs shape {shape}, which is not (N, C, *spatial) with the input's "
            f"{x.ndim - 2} spatial dimension(s); pass reshape=fn turning it into (N, C, H, W) "
            "(e.g. tokens (N, T, C) -> (N, C, h, w)), or choose a convolutional layer"
        )
    return t


def _one_target(result: CAMResult) -> CAMResult:
    """``result`` without its K axis (dim 1): the shapes of a call with one target per image.

    A subclass of :class:`CAMResult` keeps its type and its own fields.
    """
    return replace(
        result,
        maps={n: m.squeeze(1) for n, m in result.maps.items()},
        raw={n: m.squeeze(1) for n, m in result.raw.items()},
        targets=None if result.targets is None else result.targets.squeeze(1),
        scores=result.scores.squeeze(1),
        logits=result.logits,
        fused=None if result.fused is None else result.fused.squeeze(1),
    )


def _check_eigen_smooth(cls: type[BaseCAM], eigen_smooth: object) -> None:
    if eigen_smooth not in (True, False):
        raise InputError(f"eigen_smooth={eigen_smooth!r} must be True or False")
    if eigen_smooth and not cls.accepts_eigen_smooth:
        raise InputError(
            f"eigen_smooth=True is for methods that sum weighted channels; {cls.__name__} "
            "does not (see accepts_eigen_smooth): leave eigen_smooth off, or use e.g. 'gradcam'"
        )


def eigen_combine(weights: Tensor, activations: Tensor) -> Tensor:
    """The first principal component of the weighted channels ``w_c A^c``: ``(N, K, *s)`` maps.

    pytorch-grad-cam's ``eigen_smooth``: the ``(positions, C)`` matrix of
    ``w_c A^c`` with each channel's mean subtracted, projected on its first
    right singular vector. The sign, which the SVD leaves arbitrary (and
    pytorch-grad-cam leaves so), is fixed so the map correlates non-negatively
    with the plain channel sum (:func:`camlens.methods.eigencam.first_component`).
    Weights and activations as in :func:`combine`.
    """
    from camlens.methods.eigencam import first_component

    w = weights if weights.ndim > 3 else weights[(...,) + (None,) * (activations.ndim - 2)]
    return first_component(w * activations.unsqueeze(1), activations.ndim - 2, center=True)


def combine(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_c w_c A^c: ``(N, K, C)`` or ``(N, K, C, *s)`` weights with ``(N, C, *s)`` activations -> ``(N, K, *s)``."""
    if weights.ndim == 3:
        return torch.einsum("nkc,nc...->nk...", weights, activations)
    return (weights * activations.unsqueeze(1)).sum(dim=2)
