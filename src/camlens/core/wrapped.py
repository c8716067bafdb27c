"""Explain models wrapped in ``DataParallel``, ``DistributedDataParallel`` or ``torch.compile``.

Forward hooks do not work through these wrappers as users expect:
``DataParallel`` on several GPUs runs replicas whose hooks all write into one
place; ``DistributedDataParallel`` expects every forward to be followed by a
synchronised backward of the parameters; and a ``torch.compile`` graph
silently skips hooks registered after compilation. Each wrapper keeps the
real model (``.module`` or ``._orig_mod``), with the same parameters, so
camlens explains that one: same weights, same maps, eager speed.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from camlens.errors import LayerNotUsedError

__all__ = ["check_not_compiled_inside", "compiled_submodules", "strip_wrapper_prefix", "unwrap_model"]


def _inner(model: nn.Module) -> nn.Module | None:
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    orig = getattr(model, "_orig_mod", None)  # torch._dynamo's OptimizedModule
    if isinstance(orig, nn.Module) and type(model).__name__ == "OptimizedModule":
        return orig
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The real model inside any nesting of DataParallel / DDP / ``torch.compile`` wrappers.

    Args:
        model: a model, possibly wrapped.

    Returns:
        The innermost model (``model`` itself when it is not wrapped); its
        parameters are the wrapper's parameters, so the maps are the same.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_model(torch.nn.DataParallel(net)) is net
        True
    """
    seen = 0
    while (inner := _inner(model)) is not None and seen < 8:
        model, seen = inner, seen + 1
    return model


def strip_wrapper_prefix(name: str, wrapped: nn.Module) -> str:
    """A layer name as written for the wrapper (``"module.seq.4"``), renamed for the real model (``"seq.4"``)."""
    model = wrapped
    while (inner := _inner(model)) is not None:
        prefix = "module." if hasattr(model, "module") and model.module is inner else "_orig_mod."
        if name.startswith(prefix):
            name = name[len(prefix) :]
        model = inner
    return name


def compiled_submodules(model: nn.Module) -> list[str]:
    """Names of submodules of ``model`` that were passed through ``torch.compile`` on their own."""
    return [n for n, m in model.named_modules() if n and type(m).__name__ == "OptimizedModule"]


def check_not_compiled_inside(model: nn.Module, layer_names: Iterable[str]) -> None:
    """Raise a clear error when a requested layer sits inside a separately compiled submodule.

    Raises:
        LayerNotUsedError: hooks there would be skipped by the compiled graph;
            the message names the submodule and the fix.
    """
    for sub in compiled_submodules(model):
        for name in layer_names:
            if name.startswith(sub + "."):
                raise LayerNotUsedError(
                    f"layer {name!r} is inside {sub!r}, which was passed through torch.compile; a compiled "
                    f"graph skips the hooks camlens needs. Explain with the eager module instead: "
                    f"set model.{sub} = model.{sub}._orig_mod (same weights), or compile the whole model "
                    "(camlens unwraps a compiled top-level model itself)"
                )
