"""IS-CAM against a float64 loop over channels and integration steps, and against torchcam's ISCAM."""

from __future__ import annotations

import pytest
import torch
from _perturb_refs import (
    CLASSES,
    DT,
    channel_softmax,
    full_res_model,
    inputs,
    masks_loop,
    pooled_model,
    score_loop,
    weighted_map,
)

import camlens
from camlens.methods.iscam import path_coefficients


def test_path_coefficients() -> None:
    assert path_coefficients(4, "linear") == [0.25, 0.5, 0.75, 1.0]
    assert path_coefficients(4, "cumulative") == [0.25, 0.75, 1.5, 2.5]  # 1/4, 1/4 + 2/4, ...


@pytest.mark.parametrize("weighting", ["probability", "channel-softmax"])
@pytest.mark.parametrize("path", ["cumulative", "linear"])
def test_iscam_matches_loop(weighting: str, path: str) -> None:
    model, x, cut, steps = pooled_model(), inputs(), 4, 3
    result = camlens.ISCAM(model, str(cut), n_samples=steps, path=path, weighting=weighting, batch_size=5)(
        x, target=CLASSES
    )
    a = model[: cut + 1](x).detach()
    for n, c in enumerate(CLASSES):
        scores: list[float | None] = []
        for mask in masks_loop(a[n], (6, 6)):
            if mask is None:
                scores.append(None)
                continue
            total, acc = 0.0, 0.0
            for i in range(1, steps + 1):
                scale = i / steps if path == "linear" else acc + i / steps
                acc = scale
                total += score_loop(model, x[n : n + 1] * (scale * mask), c, weighting == "probability")
            scores.append(total / steps)
        live = [s for s in scores if s is not None]
        if weighting == "channel-softmax":
            soft = iter(channel_softmax(live))
            scores = [None if s is None else next(soft) for s in scores]
        weights = [0.0 if s is None else s for s in scores]
        torch.testing.assert_close(result.raw[str(cut)][n], weighted_map(a[n], weights), rtol=1e-7, atol=1e-10)


def test_iscam_matches_torchcam() -> None:
    from torchcam.methods import ISCAM as TorchcamISCAM

    model, x = full_res_model(), inputs()
    ours = camlens.ISCAM(model, "3", n_samples=5, weighting="channel-softmax", skip_constant=False)
    extractor = TorchcamISCAM(model, "3", num_samples=5, input_shape=(2, 6, 6))
    try:
        with torch.no_grad():
            scores = model(x)
        (theirs,) = extractor(class_idx=CLASSES, scores=scores)
    finally:
        extractor.remove_hooks()
    torch.testing.assert_close(ours(x, target=CLASSES).maps["3"], theirs.to(DT), rtol=0, atol=1e-6)


def test_iscam_keywords_are_checked() -> None:
    with pytest.raises(camlens.InputError, match="path='log'"):
        camlens.ISCAM(pooled_model(), "4", path="log")
    with pytest.raises(camlens.InputError, match="n_samples=True"):
        camlens.ISCAM(pooled_model(), "4", n_samples=True)
