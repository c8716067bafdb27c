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

from camlens.core.targets import OutputSpec
from camlens.metrics._common import class_probs

__all__ = ["ProbeRunner"]


@dataclass(frozen=True)
class _Probe:
    build: Callable[[slice], Tensor]  # input rows -> (G * m * W, C, H, W) or (G, m, W, C, H, W) images
    groups: int
    width: int


class ProbeRunner:
    """Collects the perturbed images the metrics plan and scores them together, chunk by chunk.

    Args:
        model: the classifier (run under ``torch.inference_mode``; its state is not changed).
        x: ``(N, C, H, W)`` the images being explained.
        classes: ``(N,)`` the explained class of each image.
        output, batch_size: where the logits are in the output; images per forward pass.
        chunk_images: input images whose perturbations are built at once (default:
            as many as fill one forward batch of ``batch_size``).
        channels_last: feed the model channels-last batches (for a channels-last model).
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
    ) -> None:
        self.model, self.x, self.classes = model, x, classes
        self.output, self.batch_size, self.chunk_images = output, batch_size, chunk_images
        self.channels_last = channels_last
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

    def run(self) -> None:
        """Build and score every planned image, ``chunk_images`` input images at a time."""
        n, c, h, w = self.x.shape
        probes = self._probes
        live = [j for j, p in enumerate(probes) if p.groups * p.width > 0]
        per_image = sum(probes[j].groups * probes[j].width for j in live)
        chunk = self.chunk_images or max(1, self.batch_size // max(1, per_image))
        parts: list[list[Tensor]] = [[] for _ in probes]
        for i in range(0, n, chunk) if live else ():
            rows = slice(i, min(i + chunk, n))
            m = rows.stop - rows.start
            imgs = torch.cat([probes[j].build(rows).reshape(-1, c, h, w) for j in live])
            cls = torch.cat([self.classes[rows].repeat_interleave(probes[j].width).repeat(probes[j].groups)
                             for j in live])  # fmt: skip
            probs = class_probs(self.model, imgs, cls, self.output, self.batch_size, channels_last=self.channels_last)
            sizes = [probes[j].groups * m * probes[j].width for j in live]
            for j, got in zip(live, probs.split(sizes), strict=True):
                parts[j].append(got.view(probes[j].groups, m, probes[j].width))
        dtype = self.x.dtype if self.x.is_floating_point() else torch.float32
        self._results = [
            torch.cat(got, dim=1) if got else torch.empty(p.groups, n, p.width, dtype=dtype, device=self.x.device)
            for p, got in zip(probes, parts, strict=True)
        ]
