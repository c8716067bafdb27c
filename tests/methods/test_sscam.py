"""SS-CAM against a float64 loop over channels and noise samples, and against torchcam's SSCAM."""

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


@pytest.mark.parametrize("weighting", ["probability", "channel-softmax"])
def test_sscam_matches_loop(weighting: str) -> None:
    model, x, cut = pooled_model(), inputs(), 4
    method = camlens.SSCAM(model, str(cut), n_samples=3, std=0.3, seed=5, weighting=weighting, batch_size=4)
    result = method(x, target=CLASSES)
    noise = method.noise(x)  # (T, 6, 6), shared by channels and images
    assert noise.shape == (3, 6, 6) and noise.dtype == DT
    torch.testing.assert_close(noise, method.noise(x))  # seeded
    a = model[: cut + 1](x).detach()
    for n, c in enumerate(CLASSES):
        scores = []
        for mask in masks_loop(a[n], (6, 6)):
            if mask is None:  # constant channel: weight 0 (skip_constant=True)
                scores.append(None)
                continue
            prob = weighting == "probability"
            runs = [score_loop(model, x[n : n + 1] * (mask + noise[t]), c, prob) for t in range(3)]
            scores.append(sum(runs) / 3)
        live = [s for s in scores if s is not None]
        if weighting == "channel-softmax":
            soft = iter(channel_softmax(live))
            scores = [None if s is None else next(soft) for s in scores]
        weights = [0.0 if s is None else s for s in scores]
        torch.testing.assert_close(result.raw[str(cut)][n], weighted_map(a[n], weights), rtol=1e-7, atol=1e-10)


def test_sscam_with_no_noise_is_scorecam() -> None:
    model, x = pooled_model(), inputs()
    ss = camlens.SSCAM(model, "4", n_samples=2, std=0.0)(x, target=CLASSES).raw["4"]
    sc = camlens.ScoreCAM(model, "4")(x, target=CLASSES).raw["4"]
    torch.testing.assert_close(ss, sc)


def test_sscam_matches_torchcam_given_the_same_noise() -> None:
    """torchcam draws a field per image and channel; handed ours (the same for all), the maps agree."""
    from torchcam.methods import SSCAM as TorchcamSSCAM

    model, x = full_res_model(), inputs()
    ours = camlens.SSCAM(model, "3", n_samples=4, std=0.5, seed=2, weighting="channel-softmax", skip_constant=False)
    fields = iter(ours.noise(x))

    class Replay:
        def sample(self, size: torch.Size) -> torch.Tensor:
            return next(fields).expand(size)

    extractor = TorchcamSSCAM(model, "3", num_samples=4, std=0.5, input_shape=(2, 6, 6))
    extractor._distrib = Replay()
    try:
        with torch.no_grad():
            scores = model(x)
        (theirs,) = extractor(class_idx=CLASSES, scores=scores)
    finally:
        extractor.remove_hooks()
    torch.testing.assert_close(ours(x, target=CLASSES).maps["3"], theirs.to(DT), rtol=0, atol=1e-6)


def test_sscam_keywords_are_checked() -> None:
    model = pooled_model()
    with pytest.raises(camlens.InputError, match="n_samples=0"):
        camlens.SSCAM(model, "4", n_samples=0)
    with pytest.raises(camlens.InputError, match="std=-1"):
        camlens.SSCAM(model, "4", std=-1)


def test_sscam_constant_channels_are_scored_with_noise_when_not_skipped() -> None:
    model, x = pooled_model(), inputs()
    with torch.no_grad():  # channel 0 of layer 3 constant zero after the ReLU
        model[2].weight[0] = 0
        model[2].bias[0] = -1.0
    method = camlens.SSCAM(model, "3", n_samples=2, std=0.4, skip_constant=False)
    noise = method.noise(x)
    a = model[:4](x).detach()
    s = method.channel_scores(method._capture(x, CLASSES, None), a)
    for n, c in enumerate(CLASSES):
        expected = sum(score_loop(model, x[n : n + 1] * noise[t], c, True) for t in range(2)) / 2
        assert s[n, 0, 0].item() == pytest.approx(expected, rel=1e-9)
