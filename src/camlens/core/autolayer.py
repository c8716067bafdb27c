"""Choose the layer to explain when the user gives none.

The rule: run the model once on the user's own input, keep every submodule's
output that reads as feature maps with more than one position (directly,
or as tokens / channels-last, see :mod:`camlens.core.tokens`), and take the last
one (in the order the modules finish) whose maps the target score depends on.

"Depends on" is measured, not guessed: one backward pass of the target score
gives each candidate's gradient, and a layer whose gradient is zero on every
position is off the path. A module nested in such a dead module is skipped
too: in a ViT the last block's output reaches the classifier only through
its class token, so everything inside that block is only partly used; the
choice is then the previous block's output, which is the input of the last
block's attention, where token mixing still carries the patches to the score.
(A container such as the ``nn.Sequential`` of all blocks, which passes the
last block's output on unchanged, does not count as such a module.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camlens.core.capture import module_outputs
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.core.tokens import auto_reshape
from camlens.errors import CamlensError, LayerNotUsedError

__all__ = ["LayerInfo", "choose_layer", "scan_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One submodule as seen in a forward pass on the user's input.

    Attributes:
        name: as in ``model.named_modules()``.
        kind: the module's class name.
        shape: its output's shape (the last call's, for a module called twice).
        map_shape: the ``(N, C, *spatial)`` shape it reads as, or ``None``.
        on_path: whether the target score's gradient is non-zero on its maps
            (``None`` where not computed).
        same_as: a submodule whose output is this very tensor (a container
            such as ``nn.Sequential`` passing its last child's output on), or ``None``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    map_shape: tuple[int, ...] | None
    on_path: bool | None
    same_as: str | None = None

    @property
    def spatial(self) -> bool:
        """Whether the output reads as maps with more than one position."""
        return self.map_shape is not None and _positions(self.map_shape) > 1


def _positions(map_shape: tuple[int, ...]) -> int:
    p = 1
    for s in map_shape[2:]:
        p *= s
    return p


def _as_maps(t: Tensor, x: Tensor) -> Tensor | None:
    try:
        m = auto_reshape(t, tuple(x.shape))
    except CamlensError:
        return None
    if m.ndim != x.ndim or m.shape[0] != x.shape[0]:
        return None
    return m


def scan_layers(
    model: nn.Module, x: Tensor, target: TargetSpec = None, *, output: OutputSpec = None
) -> list[LayerInfo]:
    """Every submodule that returns a tensor, in finishing order, with its map shape and path test.

    One forward pass and one backward pass of the target score (predicted
    class by default) to the submodules' outputs; parameters' ``.grad``,
    training flags and hooks are left as found.

    Args:
        model: the (unwrapped) model.
        x: the user's input batch ``(N, C, *spatial)``.
        target: what is scored, as for :func:`camlens.core.targets.target_scores`.
        output: where the scores are in the model's output.

    Returns:
        ``[LayerInfo, ...]`` in the order the modules finished their (last) call.
    """
    with module_outputs(model) as outs, torch.enable_grad():
        # A leaf input that requires grad: frozen models still build a graph.
        xg = x.detach().requires_grad_(True)
        logits = select_output(model(xg), output)
        scores, _, _ = target_scores(logits, target, None)
        score = scores.float().sum()
        # keep only the outputs that are in the graph
        graph = {n: t for n, (_, t) in outs.items() if t.requires_grad}
        grads = (
            torch.autograd.grad(score, list(graph.values()), allow_unused=True)
            if graph and score.requires_grad
            else []
        )
    grad_of = dict(zip(graph, grads, strict=True))
    first_by_id: dict[int, str] = {}
    infos = []
    for name, (kind, t) in outs.items():
        owner = first_by_id.setdefault(id(t), name)
        same_as = owner if owner != name and owner.startswith(name + ".") else None
        m = _as_maps(t.detach(), x)
        on_path: bool | None = None
        if m is not None:
            g = grad_of.get(name)
            gm = None if g is None else _as_maps(g, x)
            on_path = gm is not None and bool(gm.any())
        infos.append(LayerInfo(name, kind, tuple(t.shape), None if m is None else tuple(m.shape), on_path, same_as))
    return infos


def choose_layer(
    model: nn.Module, x: Tensor, target: TargetSpec = None, *, output: OutputSpec = None
) -> str:
    """The name of the last module with spatial output on the path to the score, for input ``x``.

    Args:
        model: the (unwrapped) model.
        x: the user's input batch ``(N, C, *spatial)`` (its real size is used,
            never an assumed 3x224x224).
        target: the target the maps are for (the predicted class by default).
        output: where the scores are in the model's output.

    Returns:
        A name from ``model.named_modules()``.

    Raises:
        LayerNotUsedError: no submodule has a spatial output the score depends on.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> choose_layer(net, torch.rand(1, 1, 4, 4))
        '0'
    """
    infos = scan_layers(model, x, target, output=output)
    # A module whose maps do not reach the score, but whose insides partly do (the
    # last ViT block: only its class token is read). A container merely passing a
    # child's output on (nn.Sequential of blocks) is judged by that child instead.
    dead = [i.name for i in infos if i.map_shape is not None and i.on_path is False and i.same_as is None]

    def inside_dead(name: str) -> bool:
        return any(name.startswith(d + ".") for d in dead)

    for info in reversed(infos):
        if info.spatial and info.on_path and not inside_dead(info.name):
            return info.name
    shown = ", ".join(f"{i.name} {i.shape}" for i in infos[-8:]) or "(no submodule returned a tensor)"
    raise LayerNotUsedError(
        f"cannot choose a layer of {type(model).__name__} automatically for an input of shape "
        f"{tuple(x.shape)}: no submodule returns feature maps (N, C, *spatial) or tokens that the score "
        f"depends on (last outputs: {shown}); pass layers='name' (see `camlens layers` or camlens.list_layers)"
    )
