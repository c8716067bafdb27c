"""Shared helpers of the perturbation methods (Score-CAM, Ablation-CAM): chunking and scoring rows.

A *row* is one perturbed copy of one explained image; ``index`` ``(M,)`` says
which image of the explained batch each row belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from camlens.core.capture import forward_hooks
from camlens.core.targets import OutputSpec, select_output
from camlens.errors import InputError, TargetError
from camlens.methods.base import CAMContext

__all__ = ["DEFAULT_MEMORY_BUDGET", "check_budget", "chunks", "layout", "row_bytes", "row_scores"]

#: bytes the extra forward passes of one chunk may use, by default (512 MiB).
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def check_budget(memory_budget: int, batch_size: int | None) -> None:
    """Raise :class:`InputError` for a non-positive budget or chunk size."""
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise InputError(f"memory_budget={memory_budget!r} must be a positive number of bytes, e.g. 512 * 2**20")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size={batch_size!r} must be a positive int (rows per extra forward pass) or None")


def row_bytes(model: nn.Module, run: Callable[[], object], after: nn.Module | None = None) -> int:
    """Bytes one row of a re-run produces: the sum of every leaf module's output for ``run()``.

    ``run`` must run the model on exactly one row. With ``after``, only the
    outputs of modules called after ``after`` count (the part that is
    recomputed). The sum over all outputs bounds the peak memory of a no-grad
    pass from above, so a chunk sized from it fits the budget.
    """
    total = [0]
    started = [after is None]

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if module is after:
            started[0] = True
            return
        if started[0] and isinstance(output, Tensor):
            total[0] += output.numel() * output.element_size()

    watched = (m for m in model.modules() if next(m.children(), None) is None or m is after)
    with forward_hooks((m, hook) for m in watched), torch.no_grad():
        run()
    return max(total[0], 1)


def layout(t: Tensor, channels_last: bool | None) -> Tensor:
    """``t`` in channels-last memory order if asked, or by default for 4-D inputs on CPU.

    On CPU, oneDNN convolutions run faster on NHWC inputs (measured ~1.3x for
    the benchmark ResNet); the values are the same up to float rounding and
    the model's weights are not touched.
    """
    use = (t.device.type == "cpu") if channels_last is None else channels_last
    return t.contiguous(memory_format=torch.channels_last) if use and t.ndim == 4 else t


def chunks(total: int, per_chunk: int) -> Iterator[slice]:
    """Consecutive slices of ``range(total)`` of at most ``per_chunk`` rows."""
    for start in range(0, total, per_chunk):
        yield slice(start, min(start + per_chunk, total))


def row_scores(
    ctx: CAMContext, output: object, index: Tensor, how: OutputSpec = None, probability: bool = False
) -> Tensor:
    """The explained scores ``(M, K)`` of rows whose model output is ``output``.

    Args:
        ctx: the call's context (classes or the callable target).
        output: the model's raw output for M rows (or one row, broadcast to all M).
        index: ``(M,)`` the explained image of each row.
        how: where the scores are in the output (the method's ``output=``).
        probability: take ``softmax(logits)[class]`` instead of the logit
            (a callable target is applied to the logits unchanged).
    """
    logits = select_output(output, how)
    if logits.shape[0] == 1 and index.shape[0] != 1:
        logits = logits.expand(index.shape[0], *logits.shape[1:])
    if ctx.classes is None:
        if not callable(ctx.target):
            raise TargetError("a perturbation method needs class targets or a callable target")
        s = ctx.target(logits)
        return s[:, None] if s.ndim == 1 else s
    if probability:
        logits = logits.softmax(dim=1)
    return logits.gather(1, ctx.classes[index])
