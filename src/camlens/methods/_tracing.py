"""``torch.fx`` tracing for the optimized copy that other threads do not notice.

While :meth:`torch.fx.Tracer.trace` runs, it replaces ``nn.Module.__call__`` and
``nn.Module.__getattr__`` for the whole process, not only for the tracing
thread. Another thread that runs any module in that moment (another call of the
same Score-CAM object on the user's model, or the user's own code) goes through
the tracer: with ``torch.fx``'s own tracer it fails with ``NameError: module is
not installed as a submodule`` or gets proxies in place of tensors.

:class:`CopyTracer` hands every call from a thread other than its own straight
to the module, so those threads run as if no trace were open. Two traces at
once would stack their replacements and undo each other's, so every
:class:`CopyTracer` trace holds :data:`TRACE_LOCK` while it runs. A trace
opened by code outside camlens is not covered: ``torch.fx`` itself is not
thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from torch import fx, nn

from camlens.methods._smallmap import DenseSmallConv

__all__ = ["TRACE_LOCK", "CopyTracer", "trace", "without_dropout"]

#: held by every :class:`CopyTracer` trace while it runs (see the module docstring).
TRACE_LOCK = threading.Lock()


class CopyTracer(fx.Tracer):
    """``torch.fx``'s tracer, acting only in the thread that traces, one trace at a time.

    It also keeps :class:`~camlens.methods._smallmap.DenseSmallConv` as one
    call: its shape check is not traceable.
    """

    _owner: int | None = None

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        with TRACE_LOCK:
            self._owner = threading.get_ident()
            try:
                return super().trace(root, concrete_args)
            finally:
                self._owner = None

    def _mine(self) -> bool:
        return threading.get_ident() == self._owner

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self._mine():
            return forward(*args, **kwargs)  # torch's own Module.__call__: hooks and all
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if not self._mine():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, DenseSmallConv) or super().is_leaf_module(m, module_qualified_name)


def trace(module: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(module)`` with :class:`CopyTracer`."""
    tracer = CopyTracer()
    graph = tracer.trace(module)
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


def without_dropout(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` (changed in place) with its dropout modules taken out; valid for a module in eval mode.

    What :func:`torch.fx.experimental.optimization.remove_dropout` does, without
    its second trace, and for every dropout kind (all are the identity in eval mode).
    """
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        dropout = node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.dropout._DropoutNd)
        if dropout and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
