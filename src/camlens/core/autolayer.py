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

Two more tests keep the choice on maps a model really has for this image:
the output must depend on the input (a walk of the autograd graph from the
output back to ``x``: a relative-position bias or a mask computed from the
weights alone is the same for every image, whatever its shape), and a map
read channels-first must be a grid of the image, its sides shrunk by one
stride up to a few border cells (a ``(N, heads, tokens, head_dim)`` tensor
inside an attention block, as timm CoaT's convolutional position encoding
returns, is not). A map that holds one value at every position, in every
channel of every image, is one position repeated: an adaptive pooling that
enlarges a 1x1 map (AlexNet's ``avgpool`` on a 64x64 input, VGG's on a
32x32 one) is skipped for the convolution before it, whose map has a real
grid (unless every map is uniform, as for an all-black image: the last
one is taken then). Neither test looks at the batch size, so neither does the
choice. When every gradient is zero (a classifier head initialised to zero,
as untrained torchvision ViTs and timm's MLP-Mixer family are built), the
error says so instead of blaming the layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from camlens.core.capture import module_outputs
from camlens.core.inputs import check_image_batch
from camlens.core.ops import is_uniform
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.core.tokens import auto_reshape, plausible_grid
from camlens.errors import CamlensError, LayerNotUsedError

__all__ = ["LayerInfo", "choose_layer", "scan_layers", "zero_weights"]


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
        varies: whether the output depends on the input (``False`` for what is
            computed from the weights alone, such as a relative-position bias).
        real_grid: whether the map's spatial size is a grid of the input
            (always true for tokens and channels-last outputs, whose grid is
            found from the input's size).
        passed_on: whether the output is a tensor an earlier module (not one
            inside this one) returned, handed on unchanged (``nn.Identity``;
            timm CoaT's parallel blocks returning their stage-1 input): the
            producer is the layer to hook, since what uses the tensor may have
            run before this module.
        uniform: whether every channel of every map is one value at all
            positions (a 1x1 map repeated by an enlarging adaptive pooling):
            any CAM there is flat.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    map_shape: tuple[int, ...] | None
    on_path: bool | None
    same_as: str | None = None
    varies: bool = True
    real_grid: bool = True
    passed_on: bool = False
    uniform: bool = False

    @property
    def spatial(self) -> bool:
        """Whether the output reads as maps with more than one position."""
        return self.map_shape is not None and _positions(self.map_shape) > 1

    @property
    def candidate(self) -> bool:
        """Whether the automatic choice may take it: image-dependent maps on a real grid, on the score's path."""
        return (
            self.spatial
            and self.varies
            and self.real_grid
            and not self.passed_on
            and not self.uniform
            and bool(self.on_path)
        )


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


def _reaching(tensors: dict[str, Tensor], x: Tensor) -> set[str]:
    """The names of ``tensors`` whose autograd graph reaches the leaf ``x`` (one walk, every node visited once)."""
    reaches: dict[Any, bool] = {}

    def walk(root: Any) -> bool:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in reaches:
                continue
            nexts = [n for n, _ in node.next_functions if n is not None]
            if expanded:
                own = getattr(node, "variable", None) is x  # x's AccumulateGrad
                reaches[node] = own or any(reaches.get(n, False) for n in nexts)
            else:
                stack.append((node, True))
                stack.extend((n, False) for n in nexts if n not in reaches)
        return reaches[root]

    return {name for name, t in tensors.items() if t is x or (t.grad_fn is not None and walk(t.grad_fn))}


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

    Raises:
        InputError: ``x`` does not fit the model's first convolution (grayscale into an RGB model, ...;
            :func:`camlens.core.inputs.check_image_batch`).
    """
    check_image_batch(model, x)
    with module_outputs(model) as outs, torch.enable_grad():
        # A leaf input that requires grad: frozen models still build a graph, and the walk
        # back to it tells which outputs depend on the image.
        xg = x.detach().requires_grad_(True) if x.is_floating_point() else x
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
        varying = _reaching(graph, xg) if xg.requires_grad else set(graph)
    grad_of = dict(zip(graph, grads, strict=False))
    first_by_id: dict[int, str] = {}
    infos = []
    for name, (kind, t) in outs.items():
        owner = first_by_id.setdefault(id(t), name)
        same_as = owner if owner != name and owner.startswith(name + ".") else None
        passed_on = owner != name and same_as is None
        m = _as_maps(t.detach(), x)
        on_path: bool | None = None
        real = True
        uniform = False
        if m is not None:
            uniform = is_uniform(m)
            g = grad_of.get(name)
            gm = None if g is None else _as_maps(g, x)
            on_path = gm is not None and bool(gm.any())
            # a channels-first reading (the tensor as it came) must be a grid of the image
            real = m.shape != t.shape or plausible_grid(m.shape[2:], x.shape[2:])
        varies = name in varying or not xg.requires_grad
        shape = None if m is None else tuple(m.shape)
        infos.append(LayerInfo(name, kind, tuple(t.shape), shape, on_path, same_as, varies, real, passed_on, uniform))
    return infos


def choose_layer(
    model: nn.Module, x: Tensor, target: TargetSpec = None, *, output: OutputSpec = None
) -> str:
    """The name of the last module with spatial output on the path to the score, for input ``x``.

    Only outputs that depend on the image and read as a grid of it count
    (see the module's notes); the batch size plays no part in the choice.

    Args:
        model: the (unwrapped) model.
        x: the user's input batch ``(N, C, *spatial)`` (its real size is used,
            never an assumed 3x224x224).
        target: the target the maps are for (the predicted class by default).
        output: where the scores are in the model's output.

    Returns:
        A name from ``model.named_modules()``.

    Raises:
        LayerNotUsedError: no submodule has a spatial output the score depends
            on; or the score's gradient is zero everywhere (the message names
            the all-zero weights, e.g. an untrained zero-initialised head).

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
    dead = [
        i.name
        for i in infos
        if i.map_shape is not None and i.on_path is False and i.same_as is None and i.varies and not i.passed_on
    ]

    def inside_dead(name: str) -> bool:
        return any(name.startswith(d + ".") for d in dead)

    for info in reversed(infos):
        if info.candidate and not inside_dead(info.name):
            return info.name
    for info in reversed(infos):  # a flat image (all zeros) can leave every map uniform: take the last one then
        if info.uniform and replace(info, uniform=False).candidate and not inside_dead(info.name):
            return info.name
    maps = [i for i in infos if i.spatial and i.varies and i.real_grid]
    if maps and not any(i.on_path for i in maps):
        # The image's maps exist, yet the score's gradient is zero on every one of them.
        raise LayerNotUsedError(_zero_gradient_message(model, x, [i.name for i in maps]))
    shown = ", ".join(f"{i.name} {i.shape}" for i in infos[-8:]) or "(no submodule returned a tensor)"
    raise LayerNotUsedError(
        f"cannot choose a layer of {type(model).__name__} automatically for an input of shape "
        f"{tuple(x.shape)}: no submodule returns feature maps (N, C, *spatial) or tokens that the score "
        f"depends on (last outputs: {shown}); pass layers='name' (see `camlens layers` or camlens.list_layers)"
    )


def zero_weights(model: nn.Module) -> list[str]:
    """Names of the weight parameters of ``model`` that are all zeros (an untrained zero-initialised head)."""
    return [n for n, p in model.named_parameters() if n.endswith("weight") and p.ndim >= 2 and not bool(p.any())]


def _zero_gradient_message(model: nn.Module, x: Tensor, maps: list[str]) -> str:
    zeros = zero_weights(model)
    if zeros:
        why = (
            f"{', '.join(zeros[:4])} {'is' if len(zeros) == 1 else 'are'} all zeros (a classifier head initialised "
            "to zero, as untrained torchvision ViTs and timm's MLP-Mixer family, Hiera and Sequencer2d are built)"
        )
    else:
        why = "the score does not change with any of their values (e.g. every ReLU before the head is off)"
    shown = ", ".join(maps[-3:])
    return (
        f"cannot choose a layer of {type(model).__name__} automatically for an input of shape {tuple(x.shape)}: "
        f"the score's gradient is zero at every layer, so no layer can be told apart and every gradient "
        f"method's map would be empty; {why}. Load trained weights (or re-initialise the head), or use a "
        f"gradient-free method with the layer given, e.g. camlens.get_method('eigencam')(model, layers={maps[-1]!r}) "
        f"(layers with feature maps: {shown})"
    )
