"""Resolve user layer specs ("seq.4" or an ``nn.Module``) to named modules."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from torch import Tensor, nn

from camlens.errors import LayerNotFoundError

__all__ = ["LayerSpec", "candidate_layers", "list_layers", "resolve_layers"]

LayerSpec: TypeAlias = str | nn.Module

_SPATIAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


def candidate_layers(model: nn.Module) -> list[str]:
    """Names of the convolution and pooling layers of ``model``, in definition order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, _SPATIAL_TYPES)]


def _describe(names: Sequence[str], limit: int = 12) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_layers(model: nn.Module, layers: LayerSpec | Iterable[LayerSpec]) -> dict[str, nn.Module]:
    """Map each requested layer to ``(name, module)`` as named in ``model.named_modules()``.

    Args:
        model: the model whose submodules are searched.
        layers: one spec or several; a spec is a dotted name such as ``"seq.4"``
            or the submodule itself.

    Returns:
        An ordered dict ``{name: module}`` in the order the layers were given.

    Raises:
        LayerNotFoundError: a name is not in the model, or a module is not one
            of its submodules; the message lists near matches and candidates.
    """
    specs: list[LayerSpec]
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Iterable):  # noqa: SIM108 (mypy narrows)
        specs = [layers]  # one spec; one of another type (an int) is refused below, not by list()
    else:
        specs = list(layers)
    if not specs:
        raise LayerNotFoundError(
            f"layers=[] names no layer of {type(model).__name__}; give at least one, "
            f"e.g. one of: {_describe(candidate_layers(model))}"
        )
    by_name = dict(model.named_modules())
    by_id = {id(m): n for n, m in by_name.items()}
    out: dict[str, nn.Module] = {}
    for spec in specs:
        if isinstance(spec, str):
            if spec not in by_name or spec == "":
                near = difflib.get_close_matches(spec, [n for n in by_name if n], n=3, cutoff=0.5)
                hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
                raise LayerNotFoundError(
                    f"no layer {spec!r} in {type(model).__name__}{hint}; "
                    f"convolution and pooling layers: {_describe(candidate_layers(model))}; "
                    "camlens.list_layers(model, x) lists every layer with its output shape"
                ) from None
            out[spec] = by_name[spec]
        elif isinstance(spec, nn.Module):
            name = by_id.get(id(spec))
            if name is None or name == "":
                what = "the model itself" if spec is model else f"a {type(spec).__name__}"
                raise LayerNotFoundError(
                    f"layers got {what} that is not a submodule of {type(model).__name__}; "
                    f"pass a submodule or its name, e.g. one of: {_describe(candidate_layers(model))}"
                ) from None
            out[name] = spec
        else:
            hint = f" (did you mean {str(spec)!r}?)" if str(spec) in by_name and str(spec) else ""
            raise LayerNotFoundError(
                f"layers got {spec!r} of type {type(spec).__name__}{hint}; expected a layer name "
                "(str, as in model.named_modules()) or an nn.Module"
            )
    return out


def list_layers(model: nn.Module, x: Tensor) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every submodule that returns a tensor, with its type and output shape for input ``x``.

    Runs one forward pass without autograd; hooks are removed afterwards.

    Returns:
        ``[(name, type name, output shape), ...]`` in call order.
    """
    import torch

    from camlens.core.capture import module_outputs

    with module_outputs(model, keep=lambda t: tuple(t.shape)) as seen, torch.no_grad():
        model(x)
    return [(n, t, s) for n, (t, s) in seen.items()]
