"""What to explain: the predicted class, given classes, the top-k, or any score.

Scores are always pre-softmax (the logits), as the Grad-CAM paper asks: the
gradient of a softmax probability mixes in every other class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from camlens.errors import TargetError

__all__ = ["OutputSpec", "TargetSpec", "select_output", "target_scores"]

TargetSpec: TypeAlias = int | Sequence[int] | Sequence[Sequence[int]] | Tensor | Callable[[Tensor], Tensor] | None
OutputSpec: TypeAlias = str | int | Callable[[Any], Tensor] | None


def select_output(output: Any, how: OutputSpec = None) -> Tensor:
    """The tensor of scores inside whatever the model returned.

    Args:
        output: the model's return value.
        how: ``None`` to find it automatically (a tensor; a mapping's or an
            object's ``logits``; the first element of a tuple/list); a key or
            attribute name; an index into a tuple; or a callable.
    """
    chosen: Any
    if callable(how):
        chosen = how(output)
    elif isinstance(how, str):
        chosen = output[how] if isinstance(output, Mapping) else getattr(output, how, None)
    elif isinstance(how, int):
        chosen = output[how] if isinstance(output, (tuple, list)) else None
    elif isinstance(output, Tensor):
        chosen = output
    elif isinstance(output, Mapping) and "logits" in output:
        chosen = output["logits"]
    elif getattr(output, "logits", None) is not None:
        chosen = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        chosen = output[0]
    else:
        chosen = None
    if not isinstance(chosen, Tensor):
        raise TargetError(
            f"cannot find the scores in the model's output of type {type(output).__name__} "
            f"(output={how!r}); pass output='key', output=index or output=callable "
            "returning the (N, classes) score tensor"
        )
    return chosen


def _class_scores(logits: Tensor, idx: Tensor) -> Tensor:
    c = logits.shape[1]
    if idx.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or idx.is_complex():
        raise TargetError(f"target must hold integer class indices, got dtype {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
        bad = idx[(idx < 0) | (idx >= c)][0].item()
        raise TargetError(f"target class {bad} is out of range for a model with {c} classes; use 0..{c - 1}")
    return logits.gather(1, idx)


def target_scores(
    logits: Tensor, target: TargetSpec = None, top_k: int | None = None
) -> tuple[Tensor, Tensor | None, bool]:
    """Pick the scores to explain.

    Args:
        logits: the selected model output, ``(N, classes)`` for class targets.
        target: ``None`` (predicted class), an int (that class for every
            image), a sequence or tensor of N ints (one per image), an
            ``(N, K)`` tensor or nested list (K classes per image), or a
            callable on ``logits`` returning ``(N,)`` or ``(N, K)`` scores.
        top_k: explain the k highest-scoring classes of each image.

    Returns:
        ``(scores, classes, multi)``: scores ``(N, K)`` still attached to the
        graph, the class indices ``(N, K)`` (``None`` for a callable), and
        whether the caller asked for several targets per image.

    Raises:
        TargetError: the scores are a 0-d tensor (one number for the whole
            batch), or do not fit ``target`` / ``top_k``.
    """
    if logits.ndim == 0:
        raise TargetError(
            "the model's output is a 0-d tensor (one number for the whole batch), but camlens explains "
            "scores per image: return (N, classes) scores, or (N,) / (N, K) scores picked by "
            "target=callable; if the output holds them elsewhere, pick them with output='key', an index "
            "or a callable"
        )
    n = logits.shape[0]
    if top_k is not None:
        if target is not None:
            raise TargetError(f"give target or top_k, not both (got target={target!r}, top_k={top_k})")
        if logits.ndim != 2:
            raise TargetError(f"top_k needs (N, classes) scores; the model output has shape {tuple(logits.shape)}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= logits.shape[1]:
            raise TargetError(f"top_k={top_k!r} must be an int from 1 to the number of classes ({logits.shape[1]})")
        idx = logits.detach().topk(top_k, dim=1).indices
        return logits.gather(1, idx), idx, True
    if callable(target) and not isinstance(target, Tensor):
        scores = target(logits)
        if not isinstance(scores, Tensor) or scores.ndim not in (1, 2) or scores.shape[0] != n:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise TargetError(
                f"a target callable must return a tensor of shape (N,) or (N, K) with N={n}, got {shape}"
            )
        return (scores[:, None], None, False) if scores.ndim == 1 else (scores, None, True)
    if logits.ndim != 2:
        raise TargetError(
            f"class targets need (N, classes) scores, but the model output has shape "
            f"{tuple(logits.shape)}; pass target=callable that returns one score per image"
        )
    if target is None:
        idx = logits.detach().argmax(dim=1, keepdim=True)
        return logits.gather(1, idx), idx, False
    if isinstance(target, bool):
        raise TargetError(f"target={target!r} is a bool; pass a class index")
    if isinstance(target, int):
        idx = torch.full((n, 1), target, dtype=torch.long, device=logits.device)
        return _class_scores(logits, idx), idx, False
    try:
        idx = torch.as_tensor(target, device=logits.device)
    except (TypeError, ValueError, RuntimeError):
        raise TargetError(
            f"target={target!r} is not a class index, a sequence of N={n} indices, an (N, K) array or a callable"
        ) from None
    if idx.ndim == 0:
        idx = idx.expand(n)
    if idx.ndim > 2 or idx.shape[0] != n:
        raise TargetError(
            f"target has shape {tuple(idx.shape)} but the batch has N={n} images; "
            "give one int for all, N ints (one per image) or an (N, K) array"
        )
    multi = idx.ndim == 2
    idx = idx.long() if not idx.is_floating_point() else idx
    idx = idx if multi else idx[:, None]
    return _class_scores(logits, idx), idx, multi
