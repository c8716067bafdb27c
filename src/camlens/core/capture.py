"""Hook layers for exactly one forward pass, keep what they output, and differentiate scores to it.

The hooks live only inside ``with capture(...)``: they are registered on
entry and removed in ``finally``, also when the forward pass raises.

Threads: every hook registered here (:func:`forward_hooks`, and so
:func:`capture` and :func:`module_outputs`) acts only in the thread that
registered it. Module hooks are shared by all forward passes through the
module, so while one thread's capture is open another thread's forward pass
through the same model runs the hook too; scoped to its thread, the hook does
nothing there. Several threads may therefore capture from one model at once,
each seeing only its own forward passes. The other side of the rule: a model
whose ``forward`` runs its layers in worker threads of its own cannot be
captured (the layers are reported as not called).
Gradients come from ``torch.autograd.grad`` (:func:`target_gradients`,
:func:`per_target_grads`): no parameter's ``.grad`` is touched, and nothing
below the earliest differentiated tensor is back-propagated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any

import torch
from torch import Tensor, nn

from camlens.errors import LayerShapeError

__all__ = [
    "Captured",
    "capture",
    "first_tensor",
    "forward_hooks",
    "module_outputs",
    "per_target_grads",
    "scoped_owner",
    "target_gradients",
]


def first_tensor(output: Any) -> Tensor | None:
    """The tensor a layer produced: the output itself, or the first element of a tuple/list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


@dataclass
class Captured:
    """What the hooks saw in one forward pass.

    Attributes:
        activations: layer name -> the layer's output tensor (for a layer
            called several times, the last call). Each is the tensor that
            gradients are taken against; the model downstream received a
            clone, so in-place operations after the layer cannot change it.
        calls: layer name -> how many times the layer was called.
        lazy: whether autograd recording was off until the first hooked layer.
    """

    activations: dict[str, Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    lazy: bool = False


def _make_hook(name: str, store: Captured):
    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        t = first_tensor(output)
        if t is None:
            raise LayerShapeError(
                f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, "
                "not a tensor; hook a submodule that returns a tensor"
            )
        if store.lazy:
            # Autograd recording starts at the first hooked layer: nothing
            # below it is recorded, so nothing below it is kept or back-propagated.
            torch.set_grad_enabled(True)
        if not t.requires_grad:
            # Frozen parameters and inputs that do not require grad: make the
            # activation a leaf so the score can still be differentiated to it.
            t = t.detach().requires_grad_(True)
        store.activations[name] = t
        store.calls[name] = store.calls.get(name, 0) + 1
        # Downstream gets a clone: an in-place op after this layer (ReLU(inplace=True))
        # changes the clone, never the activation we differentiate against.
        downstream = t.clone()
        if isinstance(output, Tensor):
            return downstream
        return type(output)([downstream, *output[1:]]) if isinstance(output, list) else (downstream, *output[1:])

    return hook


#: a forward hook: ``hook(module, inputs, output)``; a non-None return replaces the output.
ForwardHook = Callable[[nn.Module, Any, Any], Any]


def _this_thread_only(hook: ForwardHook, owner: int) -> ForwardHook:
    """``hook``, run only for forward passes in thread ``owner`` (a no-op in any other thread)."""

    def scoped(module: nn.Module, inputs: Any, output: Any) -> Any:
        if get_ident() != owner:
            return None
        return hook(module, inputs, output)

    scoped._camlens_owner = owner  # type: ignore[attr-defined]
    return scoped


def scoped_owner(hook: Any) -> int | None:
    """The thread a hook registered by :func:`forward_hooks` acts in (``None``: not one of ours)."""
    return getattr(hook, "_camlens_owner", None)


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, ForwardHook]]) -> Iterator[int]:
    """Register each ``(module, hook)`` as a forward hook for the block; yields how many.

    Every hook registered is removed on exit, also when registering a later
    one or the block raises: the model leaves the block with the hooks it had.
    Each hook acts only in the calling thread: another thread's forward pass
    through the same modules meanwhile is neither seen nor changed.
    """
    handles = []
    owner = get_ident()
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(_this_thread_only(hook, owner)))
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


@contextmanager
def module_outputs(
    model: nn.Module, keep: Callable[[Tensor], Any] = lambda t: t
) -> Iterator[dict[str, tuple[str, Any]]]:
    """Record, for the forward passes inside the block, what each named submodule returned.

    Yields ``{name: (type name, keep(tensor))}`` for every submodule whose output
    holds a tensor (its first tensor), in the order the modules finished their
    last call; ``keep`` says what to hold on to (the tensor itself, or, say, its
    shape so the tensor can be freed).
    """
    outs: dict[str, tuple[str, Any]] = {}

    def make(name: str) -> ForwardHook:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is not None:
                outs.pop(name, None)  # re-insert: the order is that of the last call
                outs[name] = (type(module).__name__, keep(t))

        return hook

    with forward_hooks((m, make(name)) for name, m in model.named_modules() if name):
        yield outs


@contextmanager
def capture(model: nn.Module, layers: Mapping[str, nn.Module], *, lazy: bool = True) -> Iterator[Captured]:
    """Hook ``layers`` of ``model`` for the forward passes run inside the block.

    The hooks record only the forward passes of the thread that opened the
    block (see the module's note on threads): two threads may capture the same
    layers of one model at once, and each gets exactly its own activations.

    Args:
        model: the model (only used to scope the block; its state is not changed).
        layers: ``{name: module}`` as returned by :func:`camlens.core.layers.resolve_layers`.
        lazy: run the forward with autograd off until the first hooked layer.

    Yields:
        A :class:`Captured` that fills up as the model runs.

    Example:
        >>> with capture(model, {"seq.4": model.seq[4]}) as cap:  # doctest: +SKIP
        ...     out = model(x)
        >>> cap.activations["seq.4"].shape  # doctest: +SKIP
    """
    store = Captured(lazy=lazy)
    grad_before = torch.is_grad_enabled()
    with forward_hooks((module, _make_hook(name, store)) for name, module in layers.items()):
        try:
            torch.set_grad_enabled(not lazy)
            yield store
        finally:
            torch.set_grad_enabled(grad_before)


def per_target_grads(scores: Tensor, inputs: Sequence[Tensor], *, allow_unused: bool = False) -> list[Tensor | None]:
    """Gradients of each of the K target scores ``(N, K)``: one ``(N, K, *shape[1:])`` per input.

    One backward pass per target (images are independent, so ``sum_i s_ik``
    gives every image's gradient at once). With ``allow_unused``, an input
    the scores do not depend on gets ``None``.
    """
    k = scores.shape[1]
    per = [
        torch.autograd.grad(scores[:, j].sum(), list(inputs), retain_graph=j < k - 1, allow_unused=allow_unused)
        for j in range(k)
    ]
    return [None if per[0][i] is None else torch.stack([p[i] for p in per], dim=1) for i in range(len(inputs))]


def target_gradients(scores: Tensor, inputs: Sequence[Tensor]) -> list[Tensor | None]:
    """Gradients ``(N, K, *shape[1:])`` of the K target scores ``(N, K)`` to each input, in one backward pass.

    K = 1 is one plain backward; K > 1 one batched backward (``is_grads_batched``),
    or one backward per target where an op has no vmap rule. An input the scores
    do not depend on gets ``None``.
    """
    k = scores.shape[1]
    if k == 1:
        # Images are independent (eval mode): d(sum_i s_i)/dA_i = ds_i/dA_i.
        grads = torch.autograd.grad(scores.sum(), list(inputs), allow_unused=True)
        return [None if g is None else g.unsqueeze(1) for g in grads]
    eye = torch.eye(k, dtype=scores.dtype, device=scores.device)
    grad_outputs = eye[:, None, :].expand(k, scores.shape[0], k)
    try:
        batched = torch.autograd.grad(
            scores, list(inputs), grad_outputs=grad_outputs, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:
        # An op without a vmap rule: one backward per target instead.
        return per_target_grads(scores, inputs, allow_unused=True)
    return [None if g is None else g.movedim(0, 1) for g in batched]
