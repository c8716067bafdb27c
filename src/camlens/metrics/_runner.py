"""The one forward-pass driver of the faithfulness metrics: perturbed images of many maps, chunked, batched.

Every perturbation metric (deletion and insertion, ROAD, the confidence
change) is written once, as a *plan*: it tells a :class:`ProbeRunner` which
images to build for a chunk of input images and gets back the class
probabilities on them. The runner builds the images of every planned metric
for a chunk of inputs at once, sends them through the model in batches of
``batch_size``, and keeps the probabilities per probe as ``(G, N, W)``: ``G``
maps, ``N`` images, ``W`` perturbed images per image and map. The
single-metric functions plan one metric of one map; :func:`camlens.metrics.batched.faithfulness`
plans all of them for many maps on one runner, so the forward passes they
share (the image itself, the baselines) run once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from camlens.core.capture import module_outputs
from camlens.core.targets import OutputSpec
from camlens.metrics._common import class_probs

__all__ = ["CPU_BATCH_BYTES", "DEFAULT_BUDGET", "ProbeRunner", "largest_activation"]


@dataclass(frozen=True)
class _Probe:
    build: Callable[[slice], Tensor]  # input rows -> (G * m * W, C, H, W) or (G, m, W, C, H, W) images
    groups: int
    width: int


#: bytes of perturbed images (and imputation work) built at once by default.
DEFAULT_BUDGET = 512 * 2**20

#: a forward pass holds about this many times its input in activations (a ResNet-18 at 224x224: 5-10x).
_ACTIVATION_FACTOR = 16

#: on the CPU a forward batch is kept to about this many bytes in its largest activation: batches far
#: beyond a cache's worth run slower per image (the tutorial ConvNet, 28x28: 0.38 ms per image at batch
#: 128 and 0.70 ms at 512 or more; a ResNet-18 at 224x224 runs as fast at 8 to 16 as at 64).
CPU_BATCH_BYTES = 32 * 2**20


def largest_activation(model: nn.Module, x1: Tensor) -> int:
    """Bytes of the largest tensor any submodule of ``model`` outputs for the one image ``x1`` (or ``x1``'s own).

    One forward pass under ``torch.inference_mode``, recorded by :func:`camlens.core.capture.module_outputs`
    (its hooks are gone when it returns).
    """
    with module_outputs(model, keep=lambda t: t.numel() * t.element_size()) as outs, torch.inference_mode():
        model(x1)
    return max([x1.numel() * x1.element_size(), *(size for _, size in outs.values())])


class ProbeRunner:
    """Collects the perturbed images the metrics plan and scores them together, chunk by chunk.

    Memory stays within ``budget``: the images of one probe for a chunk of
    input images are built, scored in forward batches and dropped before the
    next probe's, the chunk is as many input images as fit, and a forward batch
    is at most ``budget / (16 * one image's bytes)`` images; on the CPU also at most
    about :data:`CPU_BATCH_BYTES` in the model's largest activation (at least 4 images).

    Args:
        model: the classifier (run under ``torch.inference_mode``; its state is not changed).
        x: ``(N, C, H, W)`` the images being explained.
        classes: ``(N,)`` the explained class of each image.
        output, batch_size: where the logits are in the output; images per forward pass (at most).
        chunk_images: input images whose perturbations are built at once (at most; default: as many as fit).
        channels_last: feed the model channels-last batches (for a channels-last model).
        budget: bytes of perturbed images and imputation work held at once (about; at least one image's).
        sizing_model: the model whose activations size the CPU batch (default ``model``; for a copy of a
            model that hooks cannot observe, such as the optimized copy, the model it was made from).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        classes: Tensor,
        *,
        output: OutputSpec = None,
        batch_size: int = 512,
        chunk_images: int | None = None,
        channels_last: bool = False,
        budget: int = DEFAULT_BUDGET,
        sizing_model: nn.Module | None = None,
    ) -> None:
        self.model, self.x, self.classes = model, x, classes
        self.output, self.chunk_images = output, chunk_images
        self.channels_last, self.budget = channels_last, int(budget)
        image_bytes = x[:1].numel() * x.element_size()
        self.batch_size = max(1, min(batch_size, self.budget // max(1, _ACTIVATION_FACTOR * image_bytes)))
        if x.device.type == "cpu" and self.batch_size > 4 and len(x):
            per_image = largest_activation(model if sizing_model is None else sizing_model, x[:1])
            self.batch_size = min(self.batch_size, max(4, CPU_BATCH_BYTES // per_image))
        self._probes: list[_Probe] = []
        self._shared: dict[int, int] = {}  # id of an (N, C, H, W) tensor -> its probe
        self._results: list[Tensor] | None = None

    def add(self, build: Callable[[slice], Tensor], groups: int, width: int) -> int:
        """Plan ``width`` images per input image for each of ``groups`` maps; returns the probe's handle.

        ``build(rows)`` returns the images of the input images ``x[rows]``, ordered
        map, image, then step: ``(G, m, W, C, H, W)`` or any shape that flattens to it.
        """
        self._probes.append(_Probe(build, groups, width))
        self._results = None
        return len(self._probes) - 1

    def shared(self, images: Tensor) -> int:
        """Plan one image per input image, ``images`` ``(N, C, H, W)``; the same tensor is scored once."""
        key = id(images)
        if key not in self._shared:
            self._shared[key] = self.add(lambda rows: images[rows], 1, 1)
        return self._shared[key]

    def __getitem__(self, handle: int) -> Tensor:
        """``(G, N, W)`` probabilities of a probe (after :meth:`run`)."""
        if self._results is None:
            raise RuntimeError("ProbeRunner.run() must be called before reading results")
        return self._results[handle]

    @property
    def forward_passes(self) -> int:
        """How many images :meth:`run` sends through the model."""
        return self.x.shape[0] * sum(p.groups * p.width for p in self._probes)

    def _chunk(self) -> int:
        n = self.x.shape[0]
        widest = max((p.groups * p.width for p in self._probes), default=1)
        image_bytes = self.x[:1].numel() * self.x.element_size()
        fit = max(1, self.budget // max(1, 2 * widest * image_bytes))  # the built images and their batches
        steps = -(-n // 20)  # at least 20 chunks when there are that many images: progress to report
        return max(1, min(self.chunk_images or n, fit, steps))

    def run(self, progress: Callable[[int], None] | None = None) -> None:
        """Build and score every planned image, a chunk of input images at a time.

        Args:
            progress: called with the number of input images finished after each chunk.
        """
        n, c, h, w = self.x.shape
        probes = self._probes
        live = [j for j, p in enumerate(probes) if p.groups * p.width > 0]
        chunk = self._chunk()
        parts: list[list[Tensor]] = [[] for _ in probes]
        for i in range(0, n, chunk) if live else ():
            rows = slice(i, min(i + chunk, n))
            m = rows.stop - rows.start
            for j in live:
                p = probes[j]
                imgs = p.build(rows).reshape(-1, c, h, w)
                cls = self.classes[rows].repeat_interleave(p.width).repeat(p.groups)
                probs = class_probs(self.model, imgs, cls, self.output, self.batch_size,
                                    channels_last=self.channels_last)  # fmt: skip
                parts[j].append(probs.view(p.groups, m, p.width))
                del imgs
            if progress is not None:
                progress(m)
        dtype = self.x.dtype if self.x.is_floating_point() else torch.float32
        self._results = [
            torch.cat(got, dim=1) if got else torch.empty(p.groups, n, p.width, dtype=dtype, device=self.x.device)
            for p, got in zip(probes, parts, strict=True)
        ]
