"""Ablation-CAM (Desai & Ramaswamy, WACV 2020)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.core.capture import forward_hooks
from camlens.core.layers import LayerSpec
from camlens.errors import CamlensError, InputError, LayerShapeError
from camlens.methods._perturb import DEFAULT_MEMORY_BUDGET, check_budget, chunks, layout, row_bytes, row_scores
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, as_maps
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RERUNS", "AblationCAM", "channel_axis", "sequential_tail"]

#: how the network is re-run after ablating a channel; "auto" tries them in this order.
RERUNS = ("auto", "sequential", "hook", "full")


def _plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def sequential_tail(model: nn.Module, name: str) -> list[nn.Module] | None:
    """The modules that run after layer ``name``, if ``model`` is nested plain ``nn.Sequential`` down to it.

    Returns ``None`` when some container on the path is not an ``nn.Sequential``
    with the stock ``forward`` (then what follows the layer is not known
    without running the model).
    """
    parts = name.split(".")
    node = model
    levels: list[list[nn.Module]] = []
    for part in parts:
        if not _plain_sequential(node):
            return None
        keys = list(node._modules)
        if part not in keys:
            return None
        pos = keys.index(part)
        levels.append([m for m in list(node._modules.values())[pos + 1 :] if m is not None])
        node = node._modules[part]  # type: ignore[assignment]
    return [m for level in reversed(levels) for m in level]


def channel_axis(name: str, shape: Sequence[int], x: Tensor, reshape: Callable[[Tensor], Tensor] | None) -> Any:
    """Where each channel of layer ``name``'s maps lives in the layer's own output layout.

    The maps are the layer's output ``(N, *shape[1:])`` after ``reshape`` (or
    :func:`camlens.core.tokens.auto_reshape`): ``(N, C, *spatial)``. The
    reshape is found out by running it on one row whose values are their own
    flat positions. Channel ``k`` of the maps must be one index along one
    axis of the output, e.g. the last axis of ``(N, T, C)`` tokens or of
    channels-last ``(N, h, w, C)``; ablating it sets that whole slice to zero,
    tokens the reshape leaves out (a class token, registers) included.

    Returns:
        ``(axis, index)``: the output's axis (counting the batch axis) and, for
        each channel ``k`` of the maps, its index ``index[k]`` along that axis.

    Raises:
        LayerShapeError: the channels of the maps are not slices of one axis
            (the reshape mixes values, e.g. interpolates).
    """
    numel = math.prod(int(v) for v in shape[1:])
    probe = torch.arange(numel, dtype=torch.float64, device=x.device).view(1, *shape[1:])
    mapped = as_maps(name, probe, x, reshape)[0].flatten(1)  # (C, P): each map value's flat position
    flat = mapped.round().long()
    if bool((mapped == flat.to(mapped.dtype)).all()) and bool(((flat >= 0) & (flat < numel)).all()):
        stride = numel
        for axis, size in enumerate(shape[1:], start=1):
            stride //= int(size)
            coord = (flat // stride) % int(size)  # (C, P): the position along this axis
            if bool((coord == coord[:, :1]).all()) and len(torch.unique(coord[:, 0])) == coord.shape[0]:
                return axis, coord[:, 0]
    raise LayerShapeError(
        f"Ablation-CAM cannot ablate the channels of layer {name!r}: its output {tuple(shape)} turned into maps "
        "does not keep each channel on one axis of the output (the reshape mixes values); pass a reshape= that "
        "only permutes, slices and reshapes, or choose another layer"
    )


@dataclass
class _AblationContext(CAMContext):
    """The call's context plus each layer's output in its own layout (what the ablated copies replace)."""

    outputs: dict[str, Tensor] = field(default_factory=dict)


class _Replace:
    """A forward hook that makes the layer return ``rows`` instead of its output (once per forward)."""

    def __init__(self) -> None:
        self.rows: Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise LayerShapeError(
                f"{type(module).__name__} is called more than once per forward pass; Ablation-CAM needs "
                "a layer called once (ablating every call would explain a different network)"
            )
        if isinstance(output, Tensor):
            return self.rows
        return type(output)([self.rows, *output[1:]]) if isinstance(output, list) else (self.rows, *output[1:])


@register("ablationcam")
class AblationCAM(BaseCAM):
    """Ablation-CAM: each channel weighted by the relative drop of the score when it is zeroed.

    With ``S^c`` the target score and ``S^c_k`` the score with channel ``k`` of
    the layer's output set to zero (paper, eq. 3):

        w_k = (S^c - S^c_k) / S^c            (0 where S^c = 0)
        L^c = ReLU(sum_k w_k A^k)

    The paper sets the ablated channel to zero (so does this class);
    pytorch-grad-cam instead writes a large negative value into it.

    Re-running: only what follows the layer depends on the ablation, so the
    layer's output is replaced by the ablated copies and, where possible, only
    the rest of the network is recomputed (``rerun=``):

    - ``"sequential"``: the model is (nested) plain ``nn.Sequential`` down to
      the layer: only the modules after it run, on the ablated copies.
    - ``"hook"``: a forward hook makes the layer return the ablated copies of a
      chunk's images while the part before the layer runs on those images once
      (not once per copy). It needs everything after the layer to take the
      larger batch, which fails when a tensor from before the layer joins
      after it (a skip connection across the layer, e.g. a layer inside a
      residual block); this is checked on the clean activations first.
    - ``"full"``: every ablated copy re-runs the whole network (always works).
    - ``"auto"`` (default): the first of these that works; the choice per layer
      is kept in ``self.rerun_used``.

    Chunks hold ``batch_size`` ablated copies, or as many as fit
    ``memory_budget`` bytes (measured from one copy's layer outputs).

    Token and channels-last layers (``(N, T, C)`` of a ViT, ``(N, h, w, C)``
    of a Swin, or any layer with ``reshape=``): the reshape is a view for the
    maps only. The ablation is done in the layer's own layout, on the slice
    that holds the channel (:func:`channel_axis`): for tokens, feature ``k``
    of *every* token, the class token and registers included, as
    pytorch-grad-cam's ViT ablation layer does.

    Shapes: activations ``(N, C, *s)``, ablated scores ``(N, C, K)``,
    weights ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False
    accepts_eigen_smooth = True

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        rerun: str = "auto",
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        if rerun not in RERUNS:
            raise InputError(f"rerun={rerun!r} is not one of {list(RERUNS)}")
        check_budget(memory_budget, batch_size)
        self.rerun = rerun
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.rerun_used: dict[str, str] = {}

    def _capture(self, x: Tensor, target: Any, top_k: int | None) -> _AblationContext:
        """The forward pass; keeps each layer's output in its own layout besides the maps."""
        if not self.layers:
            from camlens.core.autolayer import choose_layer
            from camlens.core.layers import resolve_layers

            self.layers = resolve_layers(self.model, choose_layer(self.model, x, target, output=self.output))
        logits, acts, scores, classes, multi = self._forward(x, target, top_k)
        outputs = {n: a.detach() for n, a in acts.items()}
        maps = {n: self._as_maps(n, a, x) for n, a in outputs.items()}
        return _AblationContext(
            self.model, x, logits.detach(), scores.detach(), classes, maps, None, target, multi, outputs=outputs
        )

    # ---- the three ways of scoring ablated activations ------------------------------

    def _run_hooked(self, module: nn.Module, inp: Tensor, rows: Tensor) -> Any:
        replace = _Replace()
        replace.rows = rows
        with forward_hooks([(module, replace)]):  # this thread's passes only: others run unablated
            return self.model(inp)

    def _scorer(self, ctx: CAMContext, name: str, mode: str) -> Callable[[Tensor, Tensor], Tensor]:
        """``score(rows, img) -> (M, K)`` for ablated activations ``rows`` of images ``img``."""
        module = self.layers[name]
        if mode == "sequential":
            tail = sequential_tail(self.model, name)
            assert tail is not None

            def run_tail(rows: Tensor, img: Tensor) -> Tensor:
                out: Any = rows
                for m in tail:
                    out = m(out)
                return row_scores(ctx, out, img, self.output)

            return run_tail
        if mode == "hook":

            def run_hook(rows: Tensor, img: Tensor) -> Tensor:
                # rows are image-major, so the distinct images keep their order.
                uniq, counts = torch.unique_consecutive(img, return_counts=True)
                del counts
                return row_scores(ctx, self._run_hooked(module, ctx.x[uniq], rows), img, self.output)

            return run_hook

        def run_full(rows: Tensor, img: Tensor) -> Tensor:
            inp = layout(ctx.x[img], None)  # channels-last on CPU: faster convolutions
            return row_scores(ctx, self._run_hooked(module, inp, rows), img, self.output)

        return run_full

    def _hook_works(self, ctx: _AblationContext, name: str) -> bool:
        """Whether the hook re-run reproduces the clean scores of two images' duplicated activations."""
        a = ctx.outputs[name]
        img = torch.arange(min(2, a.shape[0]), device=a.device).repeat_interleave(2)
        try:
            s = self._scorer(ctx, name, "hook")(a[img], img)
        except CamlensError:
            raise
        except (RuntimeError, ValueError, IndexError):
            return False  # e.g. a batch-size mismatch where a skip connection joins
        ref = ctx.scores[img]
        return s.shape == ref.shape and bool(
            torch.allclose(s, ref, rtol=1e-4, atol=1e-5 * (1 + float(ref.abs().max())))
        )

    def _choose(self, ctx: _AblationContext, name: str) -> str:
        seq_ok = sequential_tail(self.model, name) is not None
        if self.rerun == "sequential" and not seq_ok:
            raise InputError(
                f"rerun='sequential' needs the model to be plain nn.Sequential down to layer {name!r}; "
                "use rerun='hook', 'full' or 'auto'"
            )
        if self.rerun != "auto":
            return self.rerun
        if seq_ok:
            return "sequential"
        if self._hook_works(ctx, name):
            return "hook"
        warnings.warn(
            f"Ablation-CAM: the network after layer {name!r} cannot be re-run on its own "
            "(a tensor from before the layer joins after it); re-running the whole network per ablated copy",
            stacklevel=4,
        )
        return "full"

    def _rows_per_chunk(self, ctx: _AblationContext, name: str, mode: str) -> int:
        if self.batch_size is not None:
            return self.batch_size
        x1 = ctx.x[:1]
        module = self.layers[name]
        act_row = ctx.outputs[name][:1]
        after = None if mode == "full" else module
        per_row = (
            row_bytes(self.model, lambda: self.model(x1), after=after) + 2 * act_row.numel() * act_row.element_size()
        )
        if mode == "full":
            per_row += x1.numel() * x1.element_size()
        return max(1, self.memory_budget // per_row)

    def ablated_scores(self, ctx: _AblationContext, name: str) -> Tensor:
        """Target scores ``(N, C, K)`` with each channel of layer ``name`` set to zero in turn."""
        out_a = ctx.outputs[name]  # the layer's output in its own layout
        n, c = ctx.activations[name].shape[:2]
        fn = self.reshape.get(name) if isinstance(self.reshape, Mapping) else self.reshape
        axis, index = channel_axis(name, out_a.shape, ctx.x, fn)
        mode = self._choose(ctx, name)
        self.rerun_used[name] = mode
        score = self._scorer(ctx, name, mode)
        per = self._rows_per_chunk(ctx, name, mode)
        out = torch.empty(n * c, ctx.scores.shape[1], dtype=ctx.scores.dtype, device=out_a.device)
        for sl in chunks(n * c, per):
            r = torch.arange(sl.start, sl.stop, device=out_a.device)
            img, ch = r // c, r % c
            rows = out_a[img].clone()
            rows.movedim(axis, 1)[torch.arange(len(r), device=out_a.device), index[ch]] = 0  # a view: writes rows
            out[sl] = score(rows, img).to(out.dtype)
        return out.view(n, c, -1)

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert isinstance(ctx, _AblationContext)
        maps = {}
        for name, a in ctx.activations.items():
            ablated = self.ablated_scores(ctx, name)  # (N, C, K)
            base = ctx.scores[:, None, :]
            w = torch.where(base != 0, (base - ablated) / torch.where(base != 0, base, torch.ones_like(base)), 0.0)
            maps[name] = self._combine(w.transpose(1, 2).to(a.dtype), a)
        return maps
