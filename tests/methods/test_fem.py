"""FEM against a float64 loop from the paper's formula, and against pytorch-grad-cam's FEM."""

from __future__ import annotations

import math

import pytest
import torch
from _perturb_refs import DT, full_res_model, inputs

import camlens


def fem_loop(a: torch.Tensor, k: float, weighting: str) -> torch.Tensor:
    """One image's FEM map from ``(C, h, w)`` activations, with plain loops."""
    c, h, w = a.shape
    out = torch.zeros(h, w, dtype=DT)
    for ch in range(c):
        vals = [float(v) for v in a[ch].flatten()]
        mu = sum(vals) / len(vals)
        sigma = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        above = [[float(a[ch, i, j]) > mu + k * sigma for j in range(w)] for i in range(h)]
        frac = sum(map(sum, above)) / len(vals)
        for i in range(h):
            for j in range(w):
                out[i, j] += mu * above[i][j] if weighting == "channel-mean" else frac * float(a[ch, i, j])
    return out


@pytest.mark.parametrize("weighting", ["channel-mean", "mask-fraction"])
@pytest.mark.parametrize("k", [2.0, 0.5])
def test_fem_matches_loop(weighting: str, k: float) -> None:
    model, x = full_res_model(), inputs()
    result = camlens.FEM(model, "3", k=k, weighting=weighting, relu=False)(x, top_k=2)
    a = model[:4](x).detach()
    for n in range(x.shape[0]):
        expected = fem_loop(a[n], k, weighting)
        assert float(expected.abs().max()) > 0  # the threshold leaves something
        for j in range(2):  # class-agnostic: the same map for every target
            torch.testing.assert_close(result.raw["3"][n, j], expected, rtol=1e-12, atol=1e-12)


def test_fem_mask_fraction_matches_pytorch_grad_cam() -> None:
    """pytorch-grad-cam weights the activations by each mask's fraction of positions (not the paper's map)."""
    from pytorch_grad_cam import FEM as PeerFEM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = full_res_model(), inputs()
    ours = camlens.FEM(model, "3", weighting="mask-fraction")(x, target=[0, 1]).maps["3"]
    theirs = PeerFEM(model, [model[3]])(x, targets=[ClassifierOutputTarget(0), ClassifierOutputTarget(1)])
    torch.testing.assert_close(ours, torch.from_numpy(theirs).to(DT), rtol=0, atol=1e-5)
    paper = camlens.FEM(model, "3")(x, target=[0, 1]).maps["3"]
    assert float((paper - ours).abs().max()) > 0.1  # the departure is visible


def test_fem_keywords_are_checked() -> None:
    with pytest.raises(camlens.InputError, match="weighting='gap'"):
        camlens.FEM(full_res_model(), "3", weighting="gap")
    with pytest.raises(camlens.InputError, match="k='2'"):
        camlens.FEM(full_res_model(), "3", k="2")  # type: ignore[arg-type]
