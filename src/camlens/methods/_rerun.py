"""An inference-optimized copy of the model for the extra forward passes of perturbation methods.

Score-CAM runs the model once per channel and image: thousands of forward
passes of the same model on the CPU, where their cost is the whole cost of
the method. Those passes need no autograd and no hooks, so they can run
through a copy of the model prepared for inference by
:func:`torch.fx.experimental.optimization.optimize_for_inference`: BatchNorm
folded into the preceding convolution, dropout removed, and convolutions run
with pre-packed oneDNN weights in oneDNN's blocked layout. Before that, a
convolution whose input map is smaller than its kernel (a 3x3 convolution on
a 2x2 map) is replaced by the one matrix product it amounts to
(:mod:`camlens.methods._smallmap`), which skips the taps that only multiply
padding. The arithmetic is the same up to float rounding.

The copy is used only where that is known to hold, and checked every call:

- the model and the input are float32 on the CPU, no autocast is active, every
  module is in eval mode (BatchNorm folding is only valid with running
  statistics) and no module carries a forward hook or pre-hook (the copy
  would not run it the same way);
- ``torch.fx`` can trace the model (data-dependent control flow cannot be
  traced; the trace error sends the method back to the model itself);
- the copy reproduces the model's own output on the explained input to
  ``rtol=1e-4`` (relative to the largest output) on every call.

The user's model is deep-copied, never changed. The copy is cached on the
method object and rebuilt when any parameter or buffer of the model is
replaced or changed in place (its identity, storage or version counter), or
once when it stops reproducing the model for a reason that fingerprint cannot
see; a copy that fails the check right after being built is dropped until the
fingerprint changes.

Threads: one :class:`InferenceCopy` (one Score-CAM object) may serve several
threads at once. Checking, building and replacing the copy happen under a
lock, and each call runs its passes through the module it was handed, which a
later rebuild by another thread never changes; ``last_used`` is per thread.
The copy is built without the hooks another thread's call holds on the model
for the moment (they act only in that thread, see :mod:`camlens.core.capture`),
and traced so that other threads' modules run untouched while the trace is open
(:mod:`camlens.methods._tracing`).
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import OrderedDict
from typing import Any, cast

import torch
from torch import Tensor, fx, nn

from camlens.core.capture import scoped_owner
from camlens.core.targets import OutputSpec, select_output
from camlens.errors import InputError
from camlens.methods._smallmap import densify_small_convs
from camlens.methods._tracing import CopyTracer, trace, without_dropout

__all__ = ["InferenceCopy"]

#: relative tolerance of the check that the copy reproduces the model's output.
RTOL = 1e-4

#: with ``optimize=None``, a copy is first built only for a call with at least this many extra passes:
#: building costs about what a few hundred passes save (benchmark ResNet, 64x64: 0.1-0.2 s to build,
#: 0.15 ms saved per pass). A copy already built for the model is used for calls of any size.
MIN_ROWS_TO_BUILD = 512


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    tensors = [*model.parameters(), *model.buffers()]
    return (
        tuple(id(m) for m in model.modules()),
        tuple((id(t), t.data_ptr(), t._version) for t in tensors),
    )


#: a module's forward-hook dictionaries: a copy of the model starts with these empty.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
)


def _copy_without_forward_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose modules have no forward hooks.

    The only hooks an eligible model carries are other threads' call-scoped
    ones, which that thread may remove at any moment: copying the dictionaries
    would iterate them while they change, so the copy gets fresh empty ones.
    """
    memo: dict[int, Any] = {}
    for m in model.modules():
        for attr in _HOOK_DICTS:
            d = m.__dict__.get(attr)
            if d is not None:
                memo[id(d)] = OrderedDict()
    return copy.deepcopy(model, memo)


def _foreign_only(hooks: Any) -> bool:
    """Whether every hook in ``hooks`` is another thread's call-scoped hook (one that never runs here)."""
    me = threading.get_ident()
    return all(scoped_owner(h) not in (None, me) for h in list(hooks.values()))


def _explicit_padding(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with string paddings of its convolutions written as numbers.

    oneDNN's weight pre-packing takes only numeric padding; ``"valid"`` is 0 and
    ``"same"`` (stride 1) is ``dilation * (kernel - 1) / 2`` on each side when that
    is whole. Asymmetric ``"same"`` padding (an even kernel) is left as it is,
    and the copy then falls back to the model.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and isinstance(m.padding, str):
            if m.padding == "valid":
                m.padding = (0,) * len(m.kernel_size)
            elif all(d * (k - 1) % 2 == 0 for d, k in zip(m.dilation, m.kernel_size, strict=True)):
                m.padding = tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
    return model


def _optimized(model: nn.Module, x1: Tensor) -> nn.Module:
    """The optimized copy of ``model``: BatchNorm folded, dropout removed, convolutions on maps smaller
    than their kernel (for ``x1``'s shapes) as dense matrix products, the rest in oneDNN's layout."""
    from torch.fx.experimental.optimization import fuse, optimize_for_inference

    # Both traces (ours, then optimize_for_inference's) with CopyTracer: other threads' modules run untouched.
    gm = trace(_explicit_padding(_copy_without_forward_hooks(model)))
    gm = without_dropout(cast(fx.GraphModule, fuse(gm, inplace=True, no_trace=True)))
    densify_small_convs(gm, x1)
    return optimize_for_inference(gm, {"conv_bn_fuse": False, "remove_dropout": False}, tracer=CopyTracer)


def ineligible(model: nn.Module, x: Tensor) -> str | None:
    """Why the optimized copy cannot serve ``model`` on ``x`` (``None`` when it can)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return f"the input is {x.dtype} on {x.device}; the optimized copy is for float32 on the CPU"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast is active"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn) support"
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return f"{name!r} is {t.dtype} on {t.device}; the optimized copy is for float32 on the CPU"
    for name, m in model.named_modules():
        if m.training:
            return f"module {name or type(m).__name__!r} is in training mode (BatchNorm folding needs eval mode)"
        if not (_foreign_only(m._forward_hooks) and _foreign_only(m._forward_pre_hooks)):
            return f"module {name or type(m).__name__!r} has forward hooks, which the copy would not run the same way"
    return None


class InferenceCopy:
    """Gives the module to run a method's extra forward passes through: the optimized copy, or the model.

    Args:
        optimize: ``None`` uses the copy where it is eligible, traces and
            reproduces the model's output, and the model itself otherwise;
            ``True`` requires the copy (:class:`InputError` saying why not);
            ``False`` always uses the model.
    """

    def __init__(self, optimize: bool | None) -> None:
        if optimize not in (None, True, False):
            raise InputError(f"optimize={optimize!r} must be None (automatic), True or False")
        self.optimize = optimize
        self._key: tuple[Any, ...] | None = None
        self._copy: nn.Module | None = None
        self._error: str | None = None
        self._lock = threading.Lock()  # held while the copy is checked, built or dropped
        self._local = threading.local()

    @property
    def last_used(self) -> str | None:
        """What this thread's last call ran its extra passes through: "optimized copy" or "model"."""
        return getattr(self._local, "used", None)

    def _reproduces(self, x: Tensor, logits: Tensor, output: OutputSpec) -> bool:
        """Check the copy against the model's ``logits`` on ``x``; a copy that fails is dropped for good.

        "For good" means until the model's fingerprint changes: the error is kept, so later calls
        with the same model go straight to the model instead of rebuilding.
        """
        assert self._copy is not None
        try:
            with torch.no_grad():
                # .forward, not __call__: a torch.fx module's __call__ prints the failing line to stderr
                # before raising, and here a failure only means falling back to the model.
                got = select_output(self._copy.forward(x), output)
        except Exception as e:  # e.g. oneDNN refuses an op the trace kept (a broadcasting multiply)
            self._copy = None
            self._error = f"the optimized copy fails on this input ({type(e).__name__}: {str(e).splitlines()[0]})"
            return False
        ref = logits.detach()
        tol = RTOL * float(ref.abs().amax().clamp_min(1.0))
        if got.shape == ref.shape and torch.allclose(got.to(ref.dtype), ref, rtol=RTOL, atol=tol):
            return True
        self._copy = None
        self._error = "the optimized copy does not reproduce the model's output on this input"
        return False

    def _build(self, model: nn.Module, key: tuple[Any, ...], x1: Tensor) -> None:
        """Prepare the copy of ``model`` whose fingerprint is ``key`` (nothing to do if it is the cached one).

        ``x1`` (one row of the explained input) gives the shapes that decide which
        convolutions run as dense matrix products (:mod:`camlens.methods._smallmap`).
        """
        if key == self._key:
            return
        self._key, self._copy, self._error = key, None, None
        try:
            # torch.utils.mkldnn's modules still use torch.jit.script_method, which recent torch
            # deprecates: not the caller's concern; if a later torch drops them, this falls back.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 words the same notice so
                self._copy = _optimized(model, x1)
        except Exception as e:
            self._error = f"torch.fx could not prepare the model ({type(e).__name__}: {e})"

    def module(
        self, model: nn.Module, x: Tensor, logits: Tensor, output: OutputSpec = None, rows: int | None = None
    ) -> nn.Module:
        """The module for ``rows`` extra passes of ``model``; ``logits`` is the model's own output on ``x``."""
        self._local.used = "model"
        if self.optimize is False:
            return model
        with self._lock:
            runner = self._checked(model, x, logits, output, rows)
        if runner is not model:
            self._local.used = "optimized copy"
        return runner

    def _checked(
        self, model: nn.Module, x: Tensor, logits: Tensor, output: OutputSpec, rows: int | None
    ) -> nn.Module:
        """:meth:`module`'s decision, made under the lock."""
        reason = ineligible(model, x)
        if reason is None:
            key = _fingerprint(model)
            fresh = self._key != key or (self._copy is None and self._error is None)
            if self.optimize is None and fresh and rows is not None and rows < MIN_ROWS_TO_BUILD:
                return model  # too few passes to pay for building a copy
            self._build(model, key, x[:1])
            if self._error is None and not self._reproduces(x, logits, output) and not fresh:
                # Changed where the fingerprint cannot see (``p.data`` written in place, a Python
                # attribute the trace baked in): build once more, from the model as it is now.
                self._key = None
                self._build(model, key, x[:1])
                if self._error is None:
                    self._reproduces(x, logits, output)
            reason = self._error
        if reason is None:
            assert self._copy is not None
            return self._copy
        if self.optimize:
            raise InputError(f"optimize=True: {reason}; pass optimize=None to fall back to the model itself")
        return model
